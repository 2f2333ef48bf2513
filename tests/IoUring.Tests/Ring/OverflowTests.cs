using System.Collections.Generic;
using IoUring.Interop;
using Xunit;

namespace IoUring.Tests.Ring;

/// <summary>More completions than the CQ holds: the kernel keeps the rest and nothing is lost.</summary>
public unsafe class OverflowTests
{
    [Fact]
    public void CompletionsBeyondTheCqAreKeptAndDelivered()
    {
        using var ring = IoUring.Ring.Create(new RingOptions { SqEntries = 8, CqEntries = 16 });
        Assert.Equal(16u, ring.CqEntries);
        const int Total = 200;
        int submitted = 0;
        while (submitted < Total)
        {
            Sqe* sqe;
            while (submitted < Total && (sqe = ring.GetSqe()) != null)
            {
                sqe->PrepNop();
                sqe->UserData = (ulong)submitted++;
            }

            int result = ring.Submit();
            Assert.True(result >= 0, $"submit failed: {result}");
        }

        Assert.True(ring.CqOverflowPending, "200 completions into a 16-entry CQ should overflow");

        var seen = new HashSet<ulong>();
        var batch = new Cqe[8];
        while (seen.Count < Total)
        {
            int n = ring.CopyCompletions(batch);
            for (int i = 0; i < n; i++)
            {
                Assert.True(seen.Add(batch[i].UserData), $"duplicate completion {batch[i].UserData}");
                Assert.Equal(0, batch[i].Res);
            }

            if (n == 0)
            {
                // Entering with GETEVENTS moves overflowed completions into the freed slots.
                Assert.True(ring.CqOverflowPending, $"completions lost: {seen.Count} of {Total}");
                Assert.True(ring.Submit() >= 0);
            }
        }

        Assert.False(ring.CqOverflowPending);
        Assert.Equal(0u, ring.CqOverflowCount);
    }
}
