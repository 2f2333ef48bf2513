using System;
using Microsoft.AspNetCore.Hosting;

namespace IoUring.FunctionalTests;

/// <summary>
/// Puts the shared functional suite on the io_uring transport, strictly: no fallback to Sockets.
/// At least two rings even on a one-core machine, so the suite crosses rings (reuseport spreading,
/// Unix listeners handing connections over).
/// </summary>
public static class TransportSelector
{
    public const string Name = "io_uring";

    public static IWebHostBuilder UseTestTransport(this IWebHostBuilder builder)
        => builder.UseIoUringTransport(o =>
        {
            o.FallbackToSockets = false;
            o.RingCount = Math.Max(2, Environment.ProcessorCount);
        });
}
