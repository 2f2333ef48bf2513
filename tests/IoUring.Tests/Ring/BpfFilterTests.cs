using System;
using System.Runtime.InteropServices;
using IoUring.Interop;
using IoUring.Sockets;
using Xunit;
using static IoUring.Tests.Ring.RingTestHelpers;
using Op = IoUring.Interop.IoUringConstants.Op;

namespace IoUring.Tests.Ring;

/// <summary>
/// The opcode allowlist (<see cref="OpcodeAllowlist"/>, IORING_REGISTER_BPF_FILTER, Linux 7.0): an
/// allowed opcode runs, any other completes with -EACCES; kernels without the filters refuse the
/// registration with EINVAL.
/// </summary>
public unsafe class BpfFilterTests
{
    private const int AtFdCwd = -100;
    private const int ORdOnly = 0, OCloexec = 0x80000;

    private static readonly Version s_since = new(7, 0);

    [Fact]
    public void RegistrationArgumentMatchesTheUapiHeader()
    {
        // struct io_uring_bpf with its io_uring_bpf_filter (checked against 7.2's BTF).
        Assert.Equal(72, Marshal.SizeOf<BpfFilterReg>());
        Assert.Equal(8, (int)Marshal.OffsetOf<BpfFilterReg>(nameof(BpfFilterReg.Opcode)));
        Assert.Equal(20, (int)Marshal.OffsetOf<BpfFilterReg>(nameof(BpfFilterReg.PduSize)));
        Assert.Equal(24, (int)Marshal.OffsetOf<BpfFilterReg>(nameof(BpfFilterReg.FilterPtr)));
    }

    [Fact]
    public void TheProgramAllowsExactlyTheListedOpcodes()
    {
        byte[] allowed = [Op.Accept, Op.Recv, Op.Send, Op.Read];
        SockFilter[] program = OpcodeAllowlist.BuildProgram(allowed);
        for (int opcode = 0; opcode < 256; opcode++)
        {
            // The context's word at 8: opcode, then sqe_flags, pdu_size and pad bytes that must not matter.
            uint word = (uint)opcode | 0xA5_01_FF_00u;
            Assert.Equal(Array.IndexOf(allowed, (byte)opcode) >= 0 ? 1u : 0u, Run(program, word));
        }
    }

    [Fact]
    public void AnAllowlistOfNopRunsNopAndDeniesOpenat()
    {
        using var ring = IoUring.Ring.Create();
        if (!RegisterOrExpectRefusal(ring, [Op.Nop]))
        {
            return;
        }

        Sqe* nop = ring.GetSqe();
        nop->PrepNop();
        nop->UserData = 1;
        Assert.Equal(0, WaitCqe(ring).Res);

        byte* path = stackalloc byte[] { (byte)'/', 0 };
        Sqe* open = ring.GetSqe();
        open->PrepOpenat(AtFdCwd, path, ORdOnly | OCloexec, 0);
        open->UserData = 2;
        Cqe cqe = WaitCqe(ring);
        if (cqe.Res >= 0)
        {
            Libc.Close(cqe.Res);
        }

        Assert.Equal(2ul, cqe.UserData);
        Assert.Equal(-Errno.EACCES, cqe.Res);
    }

    [Fact]
    public void EveryListedOpcodeRunsNotOnlyTheLastOne()
    {
        // DENY_REST comes with the last registration; the earlier opcodes must still run.
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            if (!RegisterOrExpectRefusal(ring, [Op.Read, Op.Nop]))
            {
                return;
            }

            WriteAll(a, "x"u8);
            byte* buffer = stackalloc byte[1];
            Sqe* read = ring.GetSqe();
            read->PrepRead(b, buffer, 1, ulong.MaxValue);
            Assert.Equal(1, WaitCqe(ring).Res);

            Sqe* nop = ring.GetSqe();
            nop->PrepNop();
            Assert.Equal(0, WaitCqe(ring).Res);

            Sqe* write = ring.GetSqe();
            write->PrepWrite(b, buffer, 1, ulong.MaxValue);
            Assert.Equal(-Errno.EACCES, WaitCqe(ring).Res);
        }
        finally
        {
            Libc.Close(a);
            Libc.Close(b);
        }
    }

    /// <summary>
    /// Registers the allowlist, true when it took. Before 7.0 the kernel must refuse with EINVAL,
    /// named in the exception; from 7.0 it must accept (a kernel built without
    /// CONFIG_IO_URING_BPF fails here, which is meant: the feature is then missing).
    /// </summary>
    private static bool RegisterOrExpectRefusal(IoUring.Ring ring, byte[] allowed)
    {
        if (Kernel >= s_since)
        {
            OpcodeAllowlist.Register(ring, allowed);
            return true;
        }

        IoUringException refusal = Assert.Throws<IoUringException>(() => OpcodeAllowlist.Register(ring, allowed));
        Assert.Equal(Errno.EINVAL, refusal.Errno);
        Assert.Contains("IORING_REGISTER_BPF_FILTER", refusal.Message, StringComparison.Ordinal);
        return false;
    }

    /// <summary>Runs the program's instructions (the few kinds it uses) over a context whose word at 8 is <paramref name="word"/>.</summary>
    private static uint Run(SockFilter[] program, uint word)
    {
        uint a = 0;
        for (int pc = 0; pc < program.Length; pc++)
        {
            SockFilter insn = program[pc];
            switch (insn.Code)
            {
                case 0x20: // ld [k]
                    Assert.Equal(IoUringConstants.BpfFilter.OpcodeOffset, insn.K);
                    a = word;
                    break;
                case 0x54: // and #k
                    a &= insn.K;
                    break;
                case 0x15: // jeq #k
                    pc += a == insn.K ? insn.JumpTrue : insn.JumpFalse;
                    break;
                case 0x06: // ret #k
                    return insn.K;
                default:
                    Assert.Fail($"unexpected instruction code 0x{insn.Code:x} at {pc}");
                    break;
            }
        }

        Assert.Fail("the program ran off its end");
        return 0;
    }
}
