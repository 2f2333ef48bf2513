using System.IO;
using System.Threading;
using IoUring.Interop;
using Xunit;
using static IoUring.Tests.Ring.RingTestHelpers;

namespace IoUring.Tests.Ring;

/// <summary>Another thread wakes a ring blocked in io_uring_enter through an eventfd read kept pending in the ring.</summary>
public unsafe class WakeTests
{
    [Fact]
    public void EventFdWriteWakesARingBlockedInEnter()
    {
        int efd = Libc.EventFd(0, Libc.EfdCloexec);
        Assert.True(efd >= 0);
        try
        {
            using var ring = IoUring.Ring.Create();
            ulong value = 0;
            Sqe* sqe = ring.GetSqe();
            sqe->PrepRead(efd, &value, 8, ulong.MaxValue);
            sqe->UserData = 1;
            ring.Submit();

            int tid = Libc.GetTid();
            var waker = new Thread(() =>
            {
                // Wait until the ring thread is asleep in the kernel (state S), then write.
                WaitUntilSleeping(tid);
                ulong one = 1;
                Libc.Write(efd, &one, 8);
            });
            waker.Start();

            Cqe cqe = WaitCqe(ring);
            waker.Join();
            Assert.Equal(1UL, cqe.UserData);
            Assert.Equal(8, cqe.Res);
            Assert.Equal(1UL, value);
        }
        finally
        {
            Libc.Close(efd);
        }
    }

    private static void WaitUntilSleeping(int tid)
    {
        string path = $"/proc/self/task/{tid}/stat";
        Until(
            () =>
            {
                string stat = File.ReadAllText(path);
                // Field 3, after the parenthesised command name, is the state.
                return stat[stat.LastIndexOf(')') + 2] == 'S';
            },
            () => "the ring thread never blocked");
    }
}
