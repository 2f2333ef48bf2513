using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.CompilerServices;

namespace IoUring.Bpf;

/// <summary>
/// The io_uring BPF event loop (Linux 7.1): a struct_ops program of type struct io_uring_bpf_ops
/// whose loop_step the kernel runs inside io_uring_enter instead of its own submit and wait
/// (io_uring/loop.c), submitting with the kfunc bpf_io_uring_submit_sqes and reaching the ring's
/// memory through bpf_io_uring_get_region (io_uring/bpf-ops.c). This finds out whether the
/// kernel has it, and attaches a program to a ring with raw bpf() calls.
/// </summary>
/// <remarks>
/// <para>What the kernel needs, in order (kernel/bpf/bpf_struct_ops.c, kernel/bpf/verifier.c,
/// io_uring/bpf-ops.c as of Linux 7.1; Debian's 7.2 BTF agrees):</para>
/// <list type="number">
/// <item>BPF_PROG_LOAD, type BPF_PROG_TYPE_STRUCT_OPS, attach_btf_id = the id of struct
/// io_uring_bpf_ops in the kernel's BTF, expected_attach_type = the index of the member the
/// program implements (check_struct_ops_btf_id), BPF_F_SLEEPABLE for the sleepable submit kfunc,
/// a GPL-compatible licence, and each kfunc call as BPF_PSEUDO_KFUNC_CALL with imm = the
/// function's BTF id. No program BTF: the verifier types the arguments from the member's
/// prototype in the kernel's BTF (btf_ctx_access through attach_func_proto), and func_info is
/// only required for programs with BPF-to-BPF calls.</item>
/// <item>BPF_MAP_CREATE, type BPF_MAP_TYPE_STRUCT_OPS, key 4 bytes, one entry, value_size = the
/// size of struct bpf_struct_ops_io_uring_bpf_ops and btf_vmlinux_value_type_id = its id, flag
/// BPF_F_LINK (bpf_struct_ops_map_alloc_check, bpf_struct_ops_map_alloc), and a btf_fd: some
/// user-loaded BTF, which map_create demands for every struct_ops map (kernel/bpf/syscall.c)
/// but never reads for one. This loader loads <see cref="PlaceholderBtf"/>, one int type.</item>
/// <item>BPF_MAP_UPDATE_ELEM of key 0 with that value: common (refcnt, state) zero, every hole
/// zero (check_zero_holes), and in data (struct io_uring_bpf_ops) each function-pointer member
/// holding a program descriptor (as an unsigned long) or 0, ring_fd the ring's descriptor
/// (copied by bpf_io_init_member), priv 0 (any other member must be 0). The kernel checks each
/// program's type, attach_btf_id and member index here; with BPF_F_LINK it only marks the map
/// READY and does not register it yet.</item>
/// <item>BPF_LINK_CREATE of the map, attach_type BPF_STRUCT_OPS: now bpf_io_reg resolves ring_fd in
/// the calling process (EBADF, or EOPNOTSUPP for a descriptor that is not an io_uring) and
/// installs the ops: EOPNOTSUPP without IORING_SETUP_DEFER_TASKRUN or with SQPOLL/IOPOLL, EBUSY
/// when the ring has a loop already. So ring_fd is checked at link time, not at update.</item>
/// </list>
/// <para>Closing the link unregisters (bpf_io_unreg); closing the ring ejects the ops
/// (io_unregister_bpf_ops) and the link stays, detached, until it is closed.</para>
/// </remarks>
internal static class IoUringBpfLoop
{
    public const string OpsType = "io_uring_bpf_ops";
    public const string SubmitKfunc = "bpf_io_uring_submit_sqes";
    public const string RegionKfunc = "bpf_io_uring_get_region";

    /// <summary>The struct_ops map's value type: the kernel's wrapper of the ops with refcnt and state in front (bpf_struct_ops.c, BPF_STRUCT_OPS_TYPE).</summary>
    public const string ValueType = "bpf_struct_ops_" + OpsType;

    /// <summary>
    /// The smallest BTF the kernel accepts (btf_parse: one type at least, string table starting and
    /// ending with NUL): header (magic 0xEB9F, version 1, hdr_len 24, type section 0..16, string
    /// section 16..21), one BTF_KIND_INT "int" of 4 bytes (info kind 1 &lt;&lt; 24, size 4,
    /// encoding BTF_INT_SIGNED &lt;&lt; 24 | 32 bits), strings "\0int\0".
    /// </summary>
    internal static ReadOnlySpan<byte> PlaceholderBtf =>
    [
        0x9F, 0xEB, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 5, 0, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 32, 0, 0, 1,
        0, (byte)'i', (byte)'n', (byte)'t', 0,
    ];

    private const string SectionPrefix = "struct_ops/";
    private const string SleepableSectionPrefix = "struct_ops.s/";

    /// <summary>True when the kernel's BTF has the ops struct and both kfuncs; false otherwise, including when the kernel exposes no BTF.</summary>
    public static bool IsAvailable(string btfPath = BtfTypes.VmlinuxPath)
    {
        (int, string)[] wanted = [(BtfTypes.KindStruct, OpsType), (BtfTypes.KindFunc, SubmitKfunc), (BtfTypes.KindFunc, RegionKfunc)];
        try
        {
            HashSet<(int Kind, string Name)>? found = BtfTypes.Find(wanted, btfPath);
            return found is not null && found.Count == wanted.Length;
        }
        catch (FormatException)
        {
            // BTF this reader cannot walk (a kind newer than it): say no rather than fail the host.
            // The test that checks the answer against the kernel version catches it.
            return false;
        }
    }

    /// <summary>
    /// Loads the program in <paramref name="section"/> of <paramref name="elf"/> and attaches it to
    /// the ring <paramref name="ringFd"/> (a ring of this process, set up with
    /// SINGLE_ISSUER | DEFER_TASKRUN). The section is struct_ops/&lt;member&gt; or
    /// struct_ops.s/&lt;member&gt; (sleepable), the member being the io_uring_bpf_ops callback the
    /// program implements (this project's convention: libbpf names the member through a
    /// .struct_ops variable and the object's BTF, which these objects do not carry).
    /// </summary>
    /// <exception cref="BpfException">The kernel lacks the loop (Errno EOPNOTSUPP, naming what is missing), refused the program (with the verifier's log), or refused the attachment (EBUSY: the ring has a loop already).</exception>
    public static IoUringBpfLoopAttachment Attach(int ringFd, BpfElfObject elf, string section, string btfPath = BtfTypes.VmlinuxPath)
    {
        if (!elf.Programs.TryGetValue(section, out BpfElfProgram? program))
        {
            throw new ArgumentException($"The object has no program section {section}.", nameof(section));
        }

        bool sleepable = section.StartsWith(SleepableSectionPrefix, StringComparison.Ordinal);
        if (!sleepable && !section.StartsWith(SectionPrefix, StringComparison.Ordinal))
        {
            throw new ArgumentException($"{section} is not a struct_ops section ({SectionPrefix}<member> or {SleepableSectionPrefix}<member>).", nameof(section));
        }

        if (program.MapReferences.Count > 0)
        {
            throw new FormatException($"{section} references maps ({program.MapReferences[0].MapName}); loop programs keep their state in the ring's memory region, and this loader creates no maps for them.");
        }

        // What to load and where to write is fixed for one object, section and kernel: worked out
        // once per process (reading the kernel's BTF, megabytes, each time would cost every ring).
        ConcurrentDictionary<(string, string), AttachPlan> plans = s_plans.GetOrCreateValue(elf);
        if (!plans.TryGetValue((section, btfPath), out AttachPlan? plan))
        {
            plan = Plan(elf, program, section, sleepable, btfPath);
            plans.TryAdd((section, btfPath), plan);
        }

        return AttachLoaded(ringFd, elf.License, plan.Instructions, sleepable, plan.OpsId, plan.MemberIndex, plan.ValueId, plan.ValueSize,
            plan.ProgramOffset, plan.RingFdOffset, plan.MemberName);
    }

    private static readonly ConditionalWeakTable<BpfElfObject, ConcurrentDictionary<(string, string), AttachPlan>> s_plans = new();

    /// <summary>The relocated program and the map value's layout for one object's section on one kernel.</summary>
    private sealed record AttachPlan(byte[] Instructions, uint OpsId, uint MemberIndex, uint ValueId, uint ValueSize, int ProgramOffset, int RingFdOffset, string MemberName);

    private static AttachPlan Plan(BpfElfObject elf, BpfElfProgram program, string section, bool sleepable, string btfPath)
    {
        string memberName = section[(sleepable ? SleepableSectionPrefix : SectionPrefix).Length..];
        BtfIndex btf = BtfIndex.Load(btfPath)
            ?? throw BpfException.Unsupported($"The kernel exposes no BTF ({btfPath}), so it has no struct {OpsType} (the io_uring BPF loop, Linux 7.1) that this loader can name.");

        int opsId = btf.Find(BtfTypes.KindStruct, OpsType);
        int valueId = btf.Find(BtfTypes.KindStruct, ValueType);
        if (opsId < 0 || valueId < 0)
        {
            throw BpfException.Unsupported($"The kernel's BTF has no struct {(opsId < 0 ? OpsType : ValueType)}: this kernel has no io_uring BPF loop (Linux 7.1, CONFIG_IO_URING_BPF_OPS).");
        }

        // The layout the update must fill, from the kernel's own description of it.
        IReadOnlyList<BtfMember> opsMembers = btf.Members(opsId);
        int memberIndex = opsMembers.ToList().FindIndex(m => m.Name == memberName);
        if (memberIndex < 0 || !btf.IsFunctionPointer(opsMembers[memberIndex].TypeId))
        {
            throw BpfException.Unsupported($"struct {OpsType} in the kernel's BTF has no callback {memberName} (section {section}); its members: {string.Join(", ", opsMembers.Select(m => m.Name))}.");
        }

        BtfMember ringFdMember = opsMembers.FirstOrDefault(m => m.Name == "ring_fd");
        BtfMember dataMember = btf.Members(valueId).FirstOrDefault(m => m.Name == "data");
        uint valueSize = btf.SizeOf(valueId);
        if (ringFdMember.Name is null || dataMember.Name is null || dataMember.TypeId != opsId || dataMember.ByteOffset + btf.SizeOf(opsId) > valueSize)
        {
            throw BpfException.Unsupported($"struct {ValueType} or {OpsType} in the kernel's BTF is not laid out as this loader knows (data: the ops; ring_fd among the ops' members).");
        }

        int KfuncId(string name)
        {
            int id = btf.Find(BtfTypes.KindFunc, name);
            return id > 0 ? id : throw BpfException.Unsupported($"{section} calls the kernel function {name}, which the kernel's BTF does not have.");
        }

        byte[] instructions = BpfElfObject.Relocate(program, map => throw new InvalidOperationException(map), KfuncId);
        return new AttachPlan(instructions, (uint)opsId, (uint)memberIndex, (uint)valueId, valueSize,
            dataMember.ByteOffset + opsMembers[memberIndex].ByteOffset, dataMember.ByteOffset + ringFdMember.ByteOffset, memberName);
    }

    private static unsafe IoUringBpfLoopAttachment AttachLoaded(int ringFd, string license, byte[] instructions, bool sleepable, uint opsId, uint memberIndex, uint valueId, uint valueSize, int programOffset, int ringFdOffset, string memberName)
    {
        BpfFd? programFd = null;
        BpfFd? map = null;
        try
        {
            programFd = BpfSyscall.LoadProgram(BpfSyscall.ProgTypeStructOps, memberIndex, instructions, license, "iou_" + memberName,
                attachBtfId: opsId, flags: sleepable ? BpfSyscall.ProgFlagSleepable : 0);
            using (BpfFd placeholder = BpfSyscall.LoadBtf(PlaceholderBtf))
            {
                // The map keeps its own reference to the BTF; ours can go at once.
                map = BpfSyscall.CreateMap(BpfSyscall.MapTypeStructOps, sizeof(uint), valueSize, 1, BpfSyscall.MapFlagLink, "iou_loop", btfVmlinuxValueTypeId: valueId, btf: placeholder);
            }


            // The value: all zero (refcnt, state, holes, priv, the callbacks this program does not
            // implement), the program's descriptor as an unsigned long in its callback's slot, and
            // the ring's descriptor in ring_fd (bpf_struct_ops_map_update_elem, bpf_io_init_member).
            byte[] value = new byte[valueSize];
            uint key = 0;
            fixed (byte* v = value)
            {
                *(ulong*)(v + programOffset) = (ulong)programFd.Value;
                *(uint*)(v + ringFdOffset) = (uint)ringFd;
                BpfSyscall.UpdateElement(map, &key, v);
            }

            BpfFd link = BpfSyscall.CreateStructOpsLink(map);
            try
            {
                return new IoUringBpfLoopAttachment(programFd, map, link);
            }
            catch
            {
                link.Dispose();
                throw;
            }
        }
        catch
        {
            map?.Dispose();
            programFd?.Dispose();
            throw;
        }
    }
}
