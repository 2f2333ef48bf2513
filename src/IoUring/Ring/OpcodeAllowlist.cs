using System;
using IoUring.Interop;
using IoUring.Sockets;

namespace IoUring;

/// <summary>
/// Restricts a ring to a set of opcodes with io_uring's BPF filters (IORING_REGISTER_BPF_FILTER,
/// Linux 7.0; io_uring/bpf_filter.c, include/uapi/linux/io_uring/bpf_filter.h). Once registered,
/// an SQE of any other opcode completes with -EACCES instead of running, so a process whose
/// memory is corrupted cannot use the ring to open files or connect elsewhere.
/// </summary>
/// <remarks>
/// What the kernel does with it (io_uring/bpf_filter.c, 7.0 to 7.2):
/// <list type="bullet">
/// <item>A filter is a classic BPF program attached to one opcode. At submission
/// (io_init_req) the kernel runs the programs of the SQE's opcode over a struct io_uring_bpf_ctx
/// (user_data at 0, opcode at 8, sqe_flags at 9, pdu_size at 10, the opcode's extra context from
/// 16; 40 bytes); a return of 0 denies, anything else allows. A denied SQE completes with -EACCES.</item>
/// <item>IO_URING_BPF_FILTER_DENY_REST on a registration gives every opcode that has no filter
/// yet the kernel's deny-all filter. Filters stack and cannot be removed, and a program added
/// later to an opcode that holds the deny-all filter runs before it, but the deny-all still
/// denies: so every allowed opcode is registered first and DENY_REST comes with the last one.</item>
/// <item>On a ring, registering needs no privilege (io_uring/register.c, __io_uring_register:
/// a filter only takes rights away from the ring it is on). Only the task-wide form (fd -1,
/// inherited by the task's new rings and children) asks for CAP_SYS_ADMIN or no_new_privs, as
/// seccomp does. A ring's filters go with the ring; nothing inherits them.</item>
/// <item>Kernels before 7.0, and kernels built without CONFIG_IO_URING_BPF, fail the registration
/// with EINVAL (an unknown register opcode; the stub io_register_bpf_filter).</item>
/// </list>
/// The program here is the same for every allowed opcode: it loads the opcode from the context
/// and allows it only if it is in the set, so each slot's program states the whole allowlist.
/// </remarks>
internal static unsafe class OpcodeAllowlist
{
    /// <summary>
    /// Registers <paramref name="allowed"/> (IORING_OP_* values, no duplicates) as the only
    /// opcodes <paramref name="ring"/> runs. Throws <see cref="IoUringException"/> naming
    /// IORING_REGISTER_BPF_FILTER if the kernel refuses (EINVAL where it lacks the filters). A
    /// refusal after the first opcode leaves the ring running the opcodes registered so far and
    /// every other one too (DENY_REST comes last), never fewer than it asked for.
    /// </summary>
    public static void Register(Ring ring, ReadOnlySpan<byte> allowed)
    {
        ArgumentNullException.ThrowIfNull(ring);
        SockFilter[] program = BuildProgram(allowed);
        fixed (SockFilter* filter = program)
        {
            for (int i = 0; i < allowed.Length; i++)
            {
                BpfFilterReg reg = default;
                reg.CmdType = IoUringConstants.BpfFilter.CmdFilter;
                reg.Opcode = allowed[i];
                reg.Flags = i == allowed.Length - 1 ? IoUringConstants.BpfFilter.DenyRest : 0;
                reg.FilterLength = (uint)program.Length;
                reg.FilterPtr = (ulong)filter;
                Ring.ThrowOnError(ring.Register(IoUringConstants.Register.RegisterBpfFilter, &reg, 1), "IORING_REGISTER_BPF_FILTER");
            }
        }
    }

    /// <summary>
    /// The classic BPF program that allows exactly <paramref name="allowed"/>:
    /// <code>
    ///   ld  [8]            ; A = the 32-bit word holding opcode, sqe_flags, pdu_size, pad[0]
    ///   and #0xff          ; A = opcode (little-endian: its byte is the word's lowest)
    ///   jeq #op0, allow    ; one per allowed opcode
    ///   ...
    ///   ret #0             ; deny
    /// allow:
    ///   ret #1
    /// </code>
    /// The kernel's checker (io_uring_check_cbpf_filter) takes only word loads of the context
    /// below its size and 4-byte aligned, ALU, jumps and returns, which is all this uses.
    /// </summary>
    public static SockFilter[] BuildProgram(ReadOnlySpan<byte> allowed)
    {
        // A jump offset is a byte, and the last jeq jumps over every other one to "allow".
        if (allowed.Length is 0 or > 250)
        {
            throw new ArgumentOutOfRangeException(nameof(allowed), allowed.Length, "An opcode allowlist needs from 1 to 250 opcodes.");
        }

        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("The opcode filter reads the opcode as the low byte of a little-endian word.");
        }

        int n = allowed.Length;
        var program = new SockFilter[n + 4];
        program[0] = SockFilter.LoadWord(IoUringConstants.BpfFilter.OpcodeOffset);
        program[1] = SockFilter.AndConstant(0xff);
        for (int i = 0; i < n; i++)
        {
            // jeq at index 2 + i; "allow" is at n + 3; a jump skips that many instructions after the next.
            program[2 + i] = SockFilter.JumpIfEqual(allowed[i], jumpTrue: (byte)(n - i), jumpFalse: 0);
        }

        program[n + 2] = SockFilter.ReturnConstant(0);
        program[n + 3] = SockFilter.ReturnConstant(1);
        return program;
    }
}
