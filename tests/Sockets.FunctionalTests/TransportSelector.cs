using Microsoft.AspNetCore.Hosting;

namespace IoUring.FunctionalTests;

/// <summary>Puts the shared functional suite on Kestrel's Sockets transport, the reference behaviour.</summary>
public static class TransportSelector
{
    public const string Name = "Sockets";

    public static IWebHostBuilder UseTestTransport(this IWebHostBuilder builder) => builder.UseSockets();
}
