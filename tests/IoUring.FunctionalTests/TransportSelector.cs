using System;
using IoUring.Transport;
using Microsoft.AspNetCore.Hosting;

namespace IoUring.FunctionalTests;

/// <summary>
/// Puts the shared functional suite on the io_uring transport, strictly: no fallback to Sockets.
/// At least two rings even on a one-core machine, so the suite crosses rings (reuseport spreading,
/// Unix listeners handing connections over). <c>IOURING_TEST_KERNEL_EVENT_LOOP</c> (a
/// <see cref="KernelEventLoop"/> name) sets where the rings' loops run, for this suite and the
/// io_uring-only tests' <see cref="IoUringServer"/>: the 7.2 leg of scripts/test-kernels.sh runs
/// them all a second time with <c>Required</c>.
/// </summary>
public static class TransportSelector
{
    public const string Name = "io_uring";

    /// <summary>The kernel event loop mode the environment asks the tests for; Off when unset.</summary>
    public static KernelEventLoop KernelEventLoop { get; } =
        Environment.GetEnvironmentVariable("IOURING_TEST_KERNEL_EVENT_LOOP") is { Length: > 0 } mode
            ? Enum.Parse<KernelEventLoop>(mode, ignoreCase: true)
            : KernelEventLoop.Off;

    public static IWebHostBuilder UseTestTransport(this IWebHostBuilder builder)
        => builder.UseIoUringTransport(o =>
        {
            o.FallbackToSockets = false;
            o.RingCount = Math.Max(2, Environment.ProcessorCount);
            o.KernelEventLoop = KernelEventLoop;
        });
}
