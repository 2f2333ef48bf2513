using System;
using System.Diagnostics;
using IoUring.Interop;
using Xunit;
using static IoUring.Tests.Ring.RingTestHelpers;

namespace IoUring.Tests.Ring;

/// <summary>Cancellation by user_data and by fd; timeouts as SQEs and as wait arguments.</summary>
public unsafe class CancelAndTimeoutTests
{
    [Fact]
    public void CancelByUserDataEndsAPendingRecv()
    {
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            byte* rx = stackalloc byte[16];
            Sqe* recv = ring.GetSqe();
            recv->PrepRecv(b, rx, 16, 0);
            recv->UserData = 100;
            ring.Submit();

            Sqe* cancel = ring.GetSqe();
            cancel->PrepCancel64(100);
            cancel->UserData = 200;
            ring.Submit();

            var cqes = WaitCqes(ring, 2);
            Assert.Equal(-Errno.ECANCELED, cqes.Find(c => c.UserData == 100).Res);
            Assert.Equal(0, cqes.Find(c => c.UserData == 200).Res);
        }
        finally
        {
            Libc.Close(a);
            Libc.Close(b);
        }
    }

    [Fact]
    public void CancelOfAnUnknownRequestReportsENOENT()
    {
        using var ring = IoUring.Ring.Create();
        Sqe* cancel = ring.GetSqe();
        cancel->PrepCancel64(12345);
        ring.Submit();
        Assert.Equal(-Errno.ENOENT, WaitCqe(ring).Res);
    }

    [Fact]
    public void CancelAllByFdEndsEveryRequestOnIt()
    {
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            using var buffers = BufferRing.Create(ring, 2, 4, 64);
            Sqe* recv = ring.GetSqe();
            recv->PrepRecvMultishotSelect(b, buffers.GroupId, bundle: false);
            recv->UserData = 1;
            Sqe* poll = ring.GetSqe();
            poll->PrepPollAdd(b, 0x001 /* POLLIN */);
            poll->UserData = 2;
            ring.Submit();

            Sqe* cancel = ring.GetSqe();
            cancel->PrepCancelFd(b, IoUringConstants.Cancel.All);
            cancel->UserData = 3;
            ring.Submit();

            var cqes = WaitCqes(ring, 3);
            Assert.Equal(-Errno.ECANCELED, cqes.Find(c => c.UserData == 1).Res);
            Assert.Equal(-Errno.ECANCELED, cqes.Find(c => c.UserData == 2).Res);
            Assert.Equal(2, cqes.Find(c => c.UserData == 3).Res); // number of requests cancelled
        }
        finally
        {
            Libc.Close(a);
            Libc.Close(b);
        }
    }

    [Fact]
    public void TimeoutSqeExpiresWithETIME()
    {
        using var ring = IoUring.Ring.Create();
        var ts = KernelTimespec.FromTimeSpan(TimeSpan.FromMilliseconds(20));
        Sqe* sqe = ring.GetSqe();
        sqe->PrepTimeout(&ts, 0, 0);
        sqe->UserData = 9;
        var watch = Stopwatch.StartNew();
        ring.Submit();
        Cqe cqe = WaitCqe(ring);
        Assert.Equal(9UL, cqe.UserData);
        Assert.Equal(-Errno.ETIME, cqe.Res);
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(15), $"expired after {watch.Elapsed}");
    }

    [Fact]
    public void TimeoutWithACountCompletesWhenThatManyCompletionsArrive()
    {
        using var ring = IoUring.Ring.Create();
        var ts = KernelTimespec.FromTimeSpan(TimeSpan.FromSeconds(30));
        Sqe* timeout = ring.GetSqe();
        timeout->PrepTimeout(&ts, 1, 0);
        timeout->UserData = 1;
        ring.Submit();
        Sqe* nop = ring.GetSqe();
        nop->PrepNop();
        nop->UserData = 2;
        ring.Submit();
        var cqes = WaitCqes(ring, 2);
        Assert.Equal(0, cqes.Find(c => c.UserData == 1).Res);
    }

    [Fact]
    public void WaitWithTimeoutReturnsETIMEWhenNothingCompletes()
    {
        using var ring = IoUring.Ring.Create();
        var watch = Stopwatch.StartNew();
        int result;
        do
        {
            result = ring.SubmitAndWait(1, TimeSpan.FromMilliseconds(30));
        }
        while (result == -Errno.EINTR);

        Assert.Equal(-Errno.ETIME, result);
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(25), $"returned after {watch.Elapsed}");
        Assert.False(ring.TryPeekCqe(out _));
    }
}
