using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using IoUring.Interop;
using Xunit;

namespace IoUring.Tests.Ring;

/// <summary>The managed structs match the kernel's uapi layout byte for byte.</summary>
public class AbiTests
{
    [Fact]
    public void StructSizesMatchTheUapiHeader()
    {
        Assert.Equal(64, Unsafe.SizeOf<Sqe>());
        Assert.Equal(16, Unsafe.SizeOf<Cqe>());
        Assert.Equal(40, Unsafe.SizeOf<SqRingOffsets>());
        Assert.Equal(40, Unsafe.SizeOf<CqRingOffsets>());
        Assert.Equal(120, Unsafe.SizeOf<IoUringParams>());
        Assert.Equal(16, Unsafe.SizeOf<IoUringBuf>());
        Assert.Equal(40, Unsafe.SizeOf<IoUringBufReg>());
        Assert.Equal(24, Unsafe.SizeOf<GetEventsArg>());
        Assert.Equal(16, Unsafe.SizeOf<KernelTimespec>());
        Assert.Equal(16, Unsafe.SizeOf<RsrcUpdate>());
        Assert.Equal(8, Unsafe.SizeOf<ProbeOp>());
        Assert.Equal(16, Unsafe.SizeOf<ProbeHeader>());
        Assert.Equal(16, Unsafe.SizeOf<IoVec>());
        Assert.Equal(56, Unsafe.SizeOf<MsgHdr>());
    }

    [Fact]
    public void SqeFieldOffsetsMatchTheUapiHeader()
    {
        Assert.Equal(0, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.Opcode)));
        Assert.Equal(1, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.Flags)));
        Assert.Equal(2, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.IoPrio)));
        Assert.Equal(4, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.Fd)));
        Assert.Equal(8, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.Off)));
        Assert.Equal(16, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.Addr)));
        Assert.Equal(24, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.Len)));
        Assert.Equal(28, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.OpFlags)));
        Assert.Equal(32, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.UserData)));
        Assert.Equal(40, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.BufIndex)));
        Assert.Equal(42, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.Personality)));
        Assert.Equal(44, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.FileIndex)));
        Assert.Equal(48, (int)Marshal.OffsetOf<Sqe>(nameof(Sqe.Addr3)));
    }

    [Fact]
    public void PrepClearsEveryFieldOfAReusedSqeButItsUserData()
    {
        // As liburing's preparers: user_data is the caller's (io_uring_sqe_set_data(3)), set before or after.
        Sqe sqe = default;
        sqe.PrepRecvMultishotSelect(5, 7, bundle: true);
        sqe.UserData = 99;
        sqe.PrepNop();
        Assert.Equal(IoUringConstants.Op.Nop, sqe.Opcode);
        Assert.Equal(0, sqe.Flags);
        Assert.Equal(0, sqe.IoPrio);
        Assert.Equal(-1, sqe.Fd);
        Assert.Equal(0, sqe.BufGroup);
        Assert.Equal(99UL, sqe.UserData);
    }
}
