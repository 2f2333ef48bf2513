using System;
using System.IO;
using System.Runtime.InteropServices;
using IoUring.Interop;
using Xunit;
using static IoUring.Tests.Ring.RingTestHelpers;

namespace IoUring.Tests.Ring;

/// <summary>Setup, probing and single-shot operations against the real kernel.</summary>
public unsafe class RingBasicsTests
{
    [Fact]
    public void DefaultSetupIsSingleIssuerWithDeferredTaskRun()
    {
        using var ring = IoUring.Ring.Create();
        bool deferred = ring.DeferTaskRun && (ring.SetupFlags & IoUringConstants.Setup.SingleIssuer) != 0;
        RequireFeature(deferred, "IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN", new Version(6, 1));
        Assert.True((ring.Features & IoUringConstants.Features.NoDrop) != 0);
        Assert.True((ring.Features & IoUringConstants.Features.ExtArg) != 0);
        Assert.Equal(256u, ring.SqEntries);
        Assert.Equal(512u, ring.CqEntries);
    }

    [Fact]
    public void CqSizeIsHonoured()
    {
        using var ring = IoUring.Ring.Create(new RingOptions { SqEntries = 64, CqEntries = 4096 });
        Assert.Equal(64u, ring.SqEntries);
        Assert.Equal(4096u, ring.CqEntries);
    }

    [Fact]
    public void ProbeListsTheOperationsTheTransportUses()
    {
        using var ring = IoUring.Ring.Create();
        IoUringProbe probe = ring.Probe();
        foreach (byte op in new[]
        {
            IoUringConstants.Op.Nop, IoUringConstants.Op.Accept, IoUringConstants.Op.Recv, IoUringConstants.Op.Send,
            IoUringConstants.Op.SendMsg, IoUringConstants.Op.Read, IoUringConstants.Op.Close, IoUringConstants.Op.Shutdown,
            IoUringConstants.Op.AsyncCancel, IoUringConstants.Op.Timeout, IoUringConstants.Op.MsgRing,
        })
        {
            Assert.True(probe.IsSupported(op), $"opcode {op} not supported");
        }

        RequireFeature(probe.IsSupported(IoUringConstants.Op.SendZc), "IORING_OP_SEND_ZC", new Version(6, 0));
        Assert.False(probe.IsSupported(255));
    }

    [Fact]
    public void NopRoundTripsUserData()
    {
        using var ring = IoUring.Ring.Create();
        for (ulong i = 1; i <= 3; i++)
        {
            Sqe* sqe = ring.GetSqe();
            sqe->PrepNop();
            sqe->UserData = 0xABCD_0000_0000_0000UL + i;
        }

        Assert.Equal(3, ring.Submit());
        var cqes = WaitCqes(ring, 3);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(0xABCD_0000_0000_0000UL + (ulong)(i + 1), cqes[i].UserData);
            Assert.Equal(0, cqes[i].Res);
        }

        Assert.Equal(0u, ring.SqDropped);
    }

    [Fact]
    public void GetSqeReturnsNullWhenTheQueueIsFull()
    {
        using var ring = IoUring.Ring.Create(new RingOptions { SqEntries = 4 });
        for (int i = 0; i < 4; i++)
        {
            Sqe* sqe = ring.GetSqe();
            Assert.True(sqe != null);
            sqe->PrepNop();
        }

        Assert.True(ring.GetSqe() == null);
        Assert.Equal(0u, ring.SqSpaceLeft);
        Sqe* again = ring.GetSqeSubmitIfFull();
        Assert.True(again != null);
        again->PrepNop();
        ring.Submit();
        Assert.Equal(5, WaitCqes(ring, 5).Count);
    }

    [Fact]
    public void GetSqeHandsOutAReusedEntryWithItsUserDataZeroed()
    {
        using var ring = IoUring.Ring.Create(new RingOptions { SqEntries = 4 });
        for (int i = 0; i < 4; i++)
        {
            Sqe* sqe = ring.GetSqe();
            sqe->UserData = 77;
            sqe->PrepNop();
        }

        ring.Submit();
        Assert.All(WaitCqes(ring, 4), cqe => Assert.Equal(77UL, cqe.UserData));
        Sqe* reused = ring.GetSqe(); // the first entry again
        Assert.Equal(0UL, reused->UserData);
        reused->PrepNop();
        ring.Submit();
        Assert.Equal(0UL, WaitCqe(ring).UserData);
    }

    [Fact]
    public void ReadsAFile()
    {
        string path = Path.GetTempFileName();
        try
        {
            byte[] content = Pattern(10_000, 1);
            File.WriteAllBytes(path, content);
            using var file = File.OpenHandle(path);
            int fd = (int)file.DangerousGetHandle();
            byte* buffer = (byte*)NativeMemory.Alloc(20_000);
            try
            {
                using var ring = IoUring.Ring.Create();
                Sqe* sqe = ring.GetSqe();
                sqe->PrepRead(fd, buffer + 0, 20_000, 100);
                sqe->UserData = 7;
                ring.Submit();
                Cqe cqe = WaitCqe(ring);
                Assert.Equal(7UL, cqe.UserData);
                Assert.Equal(content.Length - 100, cqe.Res);
                Assert.True(new ReadOnlySpan<byte>(buffer, cqe.Res).SequenceEqual(content.AsSpan(100)));
            }
            finally
            {
                NativeMemory.Free(buffer);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void SendsAndReceivesOnASocketPair()
    {
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            byte[] payload = Pattern(4096, 2);
            byte* rx = stackalloc byte[8192];
            fixed (byte* tx = payload)
            {
                // The recv is armed before any data exists, so its completion comes through the
                // kernel's poll path and deferred task work, not inline at submission.
                Sqe* recv = ring.GetSqe();
                recv->PrepRecv(b, rx, 8192, 0);
                recv->UserData = 2;
                ring.Submit();
                Assert.False(ring.TryPeekCqe(out _));

                Sqe* send = ring.GetSqe();
                send->PrepSend(a, tx, (uint)payload.Length, 0);
                send->UserData = 1;
                ring.Submit();

                var cqes = WaitCqes(ring, 2);
                Cqe sendCqe = cqes.Find(c => c.UserData == 1);
                Cqe recvCqe = cqes.Find(c => c.UserData == 2);
                Assert.Equal(payload.Length, sendCqe.Res);
                Assert.Equal(payload.Length, recvCqe.Res);
                Assert.True(new ReadOnlySpan<byte>(rx, recvCqe.Res).SequenceEqual(payload));
            }
        }
        finally
        {
            Libc.Close(a);
            Libc.Close(b);
        }
    }

    [Fact]
    public void SendMsgGathersIovecs()
    {
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            byte[] first = Pattern(100, 3), second = Pattern(3000, 4);
            fixed (byte* p1 = first)
            fixed (byte* p2 = second)
            {
                IoVec* iov = stackalloc IoVec[2];
                iov[0] = new IoVec { Base = p1, Length = (nuint)first.Length };
                iov[1] = new IoVec { Base = p2, Length = (nuint)second.Length };
                MsgHdr msg = default;
                msg.Iov = iov;
                msg.IovLen = 2;
                Sqe* sqe = ring.GetSqe();
                sqe->PrepSendMsg(a, &msg, 0);
                ring.Submit();
                Assert.Equal(3100, WaitCqe(ring).Res);
            }

            byte* rx = stackalloc byte[4000];
            int got = 0;
            while (got < 3100)
            {
                nint n = Libc.Read(b, rx + got, (nuint)(4000 - got));
                Assert.True(n > 0);
                got += (int)n;
            }

            Assert.True(new ReadOnlySpan<byte>(rx, 100).SequenceEqual(first));
            Assert.True(new ReadOnlySpan<byte>(rx + 100, 3000).SequenceEqual(second));
        }
        finally
        {
            Libc.Close(a);
            Libc.Close(b);
        }
    }

    [Fact]
    public void ShutdownAndCloseAreOperations()
    {
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            Sqe* shut = ring.GetSqe();
            shut->PrepShutdown(a, 1); // SHUT_WR: the peer reads end of stream.
            shut->UserData = 1;
            ring.Submit();
            Assert.Equal(0, WaitCqe(ring).Res);

            byte one;
            Assert.Equal(0, (int)Libc.Read(b, &one, 1));

            Sqe* close = ring.GetSqe();
            close->PrepClose(a);
            close->UserData = 2;
            ring.Submit();
            Assert.Equal(0, WaitCqe(ring).Res);
            a = -1;
        }
        finally
        {
            if (a >= 0)
            {
                Libc.Close(a);
            }

            Libc.Close(b);
        }
    }

    [Fact]
    public void RegisteredRingFdSubmits()
    {
        using var ring = IoUring.Ring.Create();
        Assert.True(ring.RegisterRingFd());
        Assert.True(ring.IsRingFdRegistered);
        Sqe* sqe = ring.GetSqe();
        sqe->PrepNop();
        sqe->UserData = 5;
        Assert.Equal(1, ring.Submit());
        Assert.Equal(5UL, WaitCqe(ring).UserData);
    }

    [Fact]
    public void MsgRingPostsACompletionOnAnotherRing()
    {
        using var source = IoUring.Ring.Create();
        using var target = IoUring.Ring.Create();
        Sqe* sqe = source.GetSqe();
        sqe->PrepMsgRing(target.Fd, 1234, 0xFEED, 0);
        sqe->UserData = 1;
        source.Submit();
        Assert.Equal(0, WaitCqe(source).Res);
        Cqe posted = WaitCqe(target);
        Assert.Equal(0xFEEDUL, posted.UserData);
        Assert.Equal(1234, posted.Res);
    }

    [Fact]
    public void StartDisabledRingIsEnabledByItsIssuer()
    {
        using var ring = IoUring.Ring.Create(new RingOptions { StartDisabled = true });
        Sqe* sqe = ring.GetSqe();
        sqe->PrepNop();
        Assert.Equal(-Errno.EBADFD, ring.Submit());
        ring.EnableRings();
        Assert.Equal(1, ring.Submit());
        Assert.Equal(0, WaitCqe(ring).Res);
    }
}
