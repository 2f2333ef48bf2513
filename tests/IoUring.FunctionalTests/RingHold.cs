using System;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport.Internal;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// Holds a ring thread in a posted work item, so that what a test makes happen in the kernel
/// meanwhile (connections, their bytes, their ends, posts) is all there when the ring next turns.
/// </summary>
internal static class RingHold
{
    /// <summary>Runs <paramref name="action"/> while <paramref name="ring"/>'s thread is held; releases it however the action ends.</summary>
    public static async Task<T> WhileHeldAsync<T>(RingThread ring, Func<Task<T>> action)
    {
        // Not disposed: the ring thread may still be inside release.Wait when this returns (a
        // disposed event throws there, and a throw from work without a slot fails the ring).
        var entered = new ManualResetEventSlim();
        var release = new ManualResetEventSlim();
        ring.Post(new BlockingWork(entered, release), 0);
        Assert.True(entered.Wait(TestWait.Default, TestContext.Current.CancellationToken), "the ring thread never ran the blocking work");
        try
        {
            return await action();
        }
        finally
        {
            release.Set();
        }
    }
}

/// <summary>Holds the ring thread that runs it until released (at most <see cref="TestWait.Default"/>).</summary>
internal sealed class BlockingWork(ManualResetEventSlim entered, ManualResetEventSlim release) : IRingWork
{
    public void Execute(RingThread ring, int operation)
    {
        entered.Set();
        release.Wait(TestWait.Default);
    }

    public void Reject(int operation, Exception error) => entered.Set();
}
