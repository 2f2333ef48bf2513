using Microsoft.AspNetCore.Hosting;

namespace IoUring.FunctionalTests;

/// <summary>Puts the shared functional suite on the io_uring transport, strictly: no fallback to Sockets.</summary>
public static class TransportSelector
{
    public const string Name = "io_uring";

    public static IWebHostBuilder UseTestTransport(this IWebHostBuilder builder)
        => builder.UseIoUringTransport(o => o.FallbackToSockets = false);
}
