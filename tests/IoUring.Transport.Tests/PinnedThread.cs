using System;
using System.Threading;
using IoUring.Interop;

namespace IoUring.Transport.Tests;

/// <summary>
/// Runs work on a new thread pinned to one CPU, for what the kernel decides by the CPU a packet is
/// sent from (IncomingCpu dispatch). Also compiled into IoUring.FunctionalTests.
/// </summary>
internal static class PinnedThread
{
    /// <summary>Runs <paramref name="work"/> on a thread allowed only <paramref name="cpu"/>, waits for it, and returns its result or rethrows its failure.</summary>
    public static T Run<T>(int cpu, Func<T> work)
    {
        T result = default!;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                CpuAffinity.SetCurrentThread([cpu]);
                result = work();
            }
            catch (Exception ex)
            {
                error = ex;
            }
        });
        thread.Start();
        thread.Join();
        return error is null ? result : throw new InvalidOperationException("The pinned client failed.", error);
    }
}
