using System;
using System.Runtime.InteropServices;
using System.Text;
using IoUring.Interop;

namespace IoUring.Bpf;

/// <summary>
/// The bpf(2) commands the dispatch and io_uring loop loaders need, through libc's syscall. Each command takes a
/// union bpf_attr (linux/bpf.h) of which it reads a prefix; the offsets below are that prefix's
/// layout, which the kernel keeps stable (new fields only ever go at the end). The attribute buffer
/// is zeroed, because the kernel rejects non-zero bytes in fields it does not use (E2BIG/EINVAL).
/// </summary>
/// <remarks>
/// Raw system calls rather than libbpf: the transport needs a handful of commands and two
/// relocation kinds (a map descriptor in a 64-bit load, a kfunc's BTF id in a call), which is a
/// page of code, while libbpf would be a native library to find, version and ship. No program
/// carries BTF or needs CO-RE: struct_ops programs name their kernel types by the ids of the
/// kernel's own BTF (<see cref="BtfIndex"/>).
/// </remarks>
internal static unsafe class BpfSyscall
{
    // The bpf system call number differs per architecture (it predates the unified table).
    private static readonly long s_sysBpf = RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 321,
        Architecture.Arm64 => 280,
        _ => -1,
    };

    // enum bpf_cmd
    private const int MapCreate = 0;
    private const int MapUpdateElem = 2;
    private const int ProgLoad = 5;
    private const int ProgGetFdById = 13;
    private const int MapGetFdById = 14;
    private const int ObjGetInfoByFd = 15;
    private const int BtfLoad = 18;
    private const int LinkCreate = 28;
    private const int LinkGetFdById = 30;

    private const int AttrSize = 128; // covers every field we set; the kernel accepts a shorter union
    private const int ObjectNameLength = 16; // BPF_OBJ_NAME_LEN

    public const uint MapTypeArray = 2;
    public const uint MapTypeReuseportSockArray = 20;
    public const uint MapFlagMmapable = 1 << 10; // BPF_F_MMAPABLE
    public const uint ProgTypeSkReuseport = 21;
    public const uint AttachTypeSkReuseportSelect = 39; // enum bpf_attach_type BPF_SK_REUSEPORT_SELECT
    public const uint MapTypeStructOps = 26;          // BPF_MAP_TYPE_STRUCT_OPS
    public const uint MapFlagLink = 1 << 13;          // BPF_F_LINK: a struct_ops map registered through a link, not by its update
    public const uint ProgTypeStructOps = 27;         // BPF_PROG_TYPE_STRUCT_OPS
    public const uint ProgFlagSleepable = 1 << 4;     // BPF_F_SLEEPABLE
    public const uint AttachTypeStructOps = 44;       // enum bpf_attach_type BPF_STRUCT_OPS (BPF_LINK_CREATE of a struct_ops map)
    private const int ENOTSUPP = 524;                 // the kernel-internal errno the verifier returns for an unknown struct_ops type

    /// <summary>
    /// BPF_MAP_CREATE. <paramref name="btfVmlinuxValueTypeId"/>: for a struct_ops map, the id in
    /// the kernel's BTF of its value type (struct bpf_struct_ops_&lt;name&gt;), which tells the
    /// kernel which struct_ops the map implements (kernel/bpf/bpf_struct_ops.c,
    /// bpf_struct_ops_map_alloc: found with bpf_struct_ops_find_value, value_size must be its size).
    /// </summary>
    /// <remarks>
    /// A struct_ops map also needs <paramref name="btf"/>, a BTF object loaded by user space
    /// (<see cref="LoadBtf"/>): map_create takes btf_fd whenever btf_vmlinux_value_type_id is set
    /// and fails with EINVAL (btf_get_by_fd of a descriptor that is no BTF) or EACCES (the
    /// kernel's own BTF) otherwise, although it reads nothing from it for a struct_ops map
    /// (kernel/bpf/syscall.c, map_create: "the bpf_prog.o must have BTF to begin with").
    /// </remarks>
    public static BpfFd CreateMap(uint type, uint keySize, uint valueSize, uint maxEntries, uint flags, string name, uint btfVmlinuxValueTypeId = 0, BpfFd? btf = null)
    {
        byte* attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        *(uint*)(attr + 0) = type;        // map_type
        *(uint*)(attr + 4) = keySize;     // key_size
        *(uint*)(attr + 8) = valueSize;   // value_size
        *(uint*)(attr + 12) = maxEntries; // max_entries
        *(uint*)(attr + 16) = flags;      // map_flags
        WriteName(attr + 28, name);       // map_name (after inner_map_fd and numa_node)
        *(uint*)(attr + 48) = btf is null ? 0u : (uint)btf.Value; // btf_fd (after map_ifindex)
        *(uint*)(attr + 60) = btfVmlinuxValueTypeId; // btf_vmlinux_value_type_id (after btf_key_type_id, btf_value_type_id, both 0)
        var fd = new BpfFd(Call(MapCreate, attr, $"BPF_MAP_CREATE({name})"));
        GC.KeepAlive(btf);
        return fd;
    }

    /// <summary>BPF_BTF_LOAD: hands the kernel a BTF blob (Documentation/bpf/btf.rst), which it checks whole.</summary>
    public static BpfFd LoadBtf(ReadOnlySpan<byte> btf)
    {
        byte* attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        fixed (byte* data = btf)
        {
            *(ulong*)(attr + 0) = (ulong)data;        // btf
            *(uint*)(attr + 16) = (uint)btf.Length;  // btf_size; no log (btf_log_buf, btf_log_size, btf_log_level 0)
            return new BpfFd(Call(BtfLoad, attr, "BPF_BTF_LOAD"));
        }
    }

    /// <summary>BPF_MAP_UPDATE_ELEM with BPF_ANY.</summary>
    public static void UpdateElement(BpfFd map, void* key, void* value)
    {
        byte* attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        *(uint*)(attr + 0) = (uint)map.Value; // map_fd
        *(ulong*)(attr + 8) = (ulong)key;     // key
        *(ulong*)(attr + 16) = (ulong)value;  // value
        _ = Call(MapUpdateElem, attr, "BPF_MAP_UPDATE_ELEM");
        GC.KeepAlive(map);
    }

    /// <summary>
    /// BPF_PROG_LOAD. When the kernel refuses the program, loads it once more with the verifier
    /// log on, so the exception says why.
    /// </summary>
    /// <remarks>
    /// A struct_ops program says which struct and member it implements: <paramref name="attachBtfId"/>
    /// is the struct's id in the kernel's BTF (attach_btf_obj_fd 0: vmlinux's) and
    /// <paramref name="expectedAttachType"/> the member's index in it (kernel/bpf/verifier.c,
    /// check_struct_ops_btf_id). <paramref name="flags"/> are prog_flags (BPF_F_SLEEPABLE).
    /// </remarks>
    public static BpfFd LoadProgram(uint type, uint expectedAttachType, ReadOnlySpan<byte> instructions, string license, string name, uint attachBtfId = 0, uint flags = 0)
    {
        byte[] licenseBytes = Encoding.ASCII.GetBytes(license + "\0");
        fixed (byte* insns = instructions)
        fixed (byte* lic = licenseBytes)
        {
            uint count = (uint)(instructions.Length / 8);
            int fd = TryLoad(type, expectedAttachType, attachBtfId, flags, insns, count, lic, name, null, 0);

            // The verifier gives up with EAGAIN when a signal is pending (kernel/bpf/verifier.c,
            // do_check); the runtime signals threads to suspend them for GC, so retry as libbpf does.
            for (int attempt = 0; fd == -Errno.EAGAIN && attempt < 5; attempt++)
            {
                fd = TryLoad(type, expectedAttachType, attachBtfId, flags, insns, count, lic, name, null, 0);
            }
            if (fd >= 0)
            {
                return new BpfFd(fd);
            }

            int errno = -fd;
            string? log = null;
            if (errno is Errno.EINVAL or Errno.EACCES or ENOTSUPP)
            {
                const int LogSize = 1 << 16;
                byte[] buffer = new byte[LogSize];
                int retry;
                fixed (byte* logBuffer = buffer)
                {
                    retry = TryLoad(type, expectedAttachType, attachBtfId, flags, insns, count, lic, name, logBuffer, LogSize);
                }

                if (retry >= 0)
                {
                    // Accepted this time (the first refusal was transient): keep the program rather
                    // than leak its descriptor.
                    return new BpfFd(retry);
                }

                int end = Array.IndexOf(buffer, (byte)0);
                log = Encoding.ASCII.GetString(buffer, 0, end < 0 ? buffer.Length : end);
            }

            throw new BpfException($"BPF_PROG_LOAD({name})", errno, log);
        }
    }

    private static int TryLoad(uint type, uint expectedAttachType, uint attachBtfId, uint flags, byte* insns, uint count, byte* license, string name, byte* logBuffer, uint logSize)
    {
        byte* attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        *(uint*)(attr + 0) = type;                              // prog_type
        *(uint*)(attr + 4) = count;                             // insn_cnt
        *(ulong*)(attr + 8) = (ulong)insns;                     // insns
        *(ulong*)(attr + 16) = (ulong)license;                  // license
        *(uint*)(attr + 24) = logBuffer == null ? 0u : 1u;      // log_level
        *(uint*)(attr + 28) = logSize;                          // log_size
        *(ulong*)(attr + 32) = (ulong)logBuffer;                // log_buf
        *(uint*)(attr + 44) = flags;                            // prog_flags (after kern_version)
        WriteName(attr + 48, name);                             // prog_name
        *(uint*)(attr + 68) = expectedAttachType;               // expected_attach_type (after prog_ifindex)
        *(uint*)(attr + 108) = attachBtfId;                     // attach_btf_id (after the BTF and func/line info fields, all 0: no program BTF)
        long ret = Libc.Syscall(s_sysBpf, ProgLoad, (long)attr, AttrSize, 0, 0, 0);
        return ret < 0 ? -Libc.LastErrno : (int)ret;
    }

    /// <summary>
    /// BPF_LINK_CREATE of a struct_ops map (attach_type BPF_STRUCT_OPS): registers the map's
    /// struct_ops with its subsystem, which may refuse (its reg callback's error). The link's
    /// release (closing its last descriptor) unregisters it (kernel/bpf/bpf_struct_ops.c,
    /// bpf_struct_ops_link_create and bpf_struct_ops_map_link_dealloc).
    /// </summary>
    public static BpfFd CreateStructOpsLink(BpfFd map)
    {
        byte* attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        *(uint*)(attr + 0) = (uint)map.Value;        // link_create.map_fd (shares its place with prog_fd)
        *(uint*)(attr + 8) = AttachTypeStructOps;    // link_create.attach_type; target_fd and flags stay 0
        int fd = Call(LinkCreate, attr, "BPF_LINK_CREATE(struct_ops)");
        GC.KeepAlive(map);
        return new BpfFd(fd);
    }

    /// <summary>The kernel-wide id of a map, program or link (BPF_OBJ_GET_INFO_BY_FD: bpf_prog_info, bpf_map_info and bpf_link_info all start with type, id).</summary>
    public static uint GetId(BpfFd fd)
    {
        uint* info = stackalloc uint[2];
        info[0] = info[1] = 0;
        byte* attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        *(uint*)(attr + 0) = (uint)fd.Value; // info.bpf_fd
        *(uint*)(attr + 4) = 8;              // info.info_len: the kernel fills only this much
        *(ulong*)(attr + 8) = (ulong)info;   // info.info
        _ = Call(ObjGetInfoByFd, attr, "BPF_OBJ_GET_INFO_BY_FD");
        GC.KeepAlive(fd);
        return info[1];
    }

    /// <summary>Whether a program with this id still exists in the kernel (needs CAP_SYS_ADMIN).</summary>
    public static bool ProgramExists(uint id) => ObjectExists(ProgGetFdById, id);

    /// <summary>Whether a map with this id still exists in the kernel (needs CAP_SYS_ADMIN).</summary>
    public static bool MapExists(uint id) => ObjectExists(MapGetFdById, id);

    /// <summary>Whether a link with this id still exists in the kernel (needs CAP_SYS_ADMIN).</summary>
    public static bool LinkExists(uint id) => ObjectExists(LinkGetFdById, id);

    private static bool ObjectExists(int command, uint id)
    {
        byte* attr = stackalloc byte[AttrSize];
        new Span<byte>(attr, AttrSize).Clear();
        *(uint*)(attr + 0) = id; // prog_id / map_id
        long ret = Libc.Syscall(s_sysBpf, command, (long)attr, AttrSize, 0, 0, 0);
        if (ret >= 0)
        {
            _ = Libc.Close((int)ret);
            return true;
        }

        int errno = Libc.LastErrno;
        return errno == Errno.ENOENT ? false : throw new BpfException(command switch { ProgGetFdById => "BPF_PROG_GET_FD_BY_ID", MapGetFdById => "BPF_MAP_GET_FD_BY_ID", _ => "BPF_LINK_GET_FD_BY_ID" }, errno);
    }

    private static int Call(int command, byte* attr, string operation)
    {
        if (s_sysBpf < 0)
        {
            throw new PlatformNotSupportedException($"bpf(2) is not wired up for {RuntimeInformation.ProcessArchitecture}.");
        }

        long ret = Libc.Syscall(s_sysBpf, command, (long)attr, AttrSize, 0, 0, 0);
        return ret < 0 ? throw new BpfException(operation, Libc.LastErrno) : (int)ret;
    }

    private static void WriteName(byte* destination, string name)
    {
        // Object names: at most 15 characters of [A-Za-z0-9_.], NUL-terminated (bpf_obj_name_cpy).
        int length = Math.Min(name.Length, ObjectNameLength - 1);
        for (int i = 0; i < length; i++)
        {
            destination[i] = (byte)name[i];
        }
    }
}
