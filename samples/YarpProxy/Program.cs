using System.Diagnostics.Metrics;
using IoUring.Transport;
using Yarp.ReverseProxy.Forwarder;

// A YARP reverse proxy on io_uring both ways: Kestrel takes the requests on the transport's rings,
// and the connections to the backend are opened on the same rings by IoUringConnectionFactory.
// Routes and the backend's address are in appsettings.json; point it elsewhere with
// ReverseProxy__Clusters__backend__Destinations__backend__Address=http://host:port/ in the environment.
var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseIoUringTransport();
builder.Services.AddIoUringConnectionFactory();
builder.Services.AddReverseProxy().LoadFromConfig(builder.Configuration.GetSection("ReverseProxy"));
builder.Services.AddSingleton<IForwarderHttpClientFactory, IoUringForwarderHttpClientFactory>();

var app = builder.Build();
app.MapReverseProxy();

// Not forwarded: which transport each side runs on (the outbound side is chosen on the first connect).
var inbound = app.Services.GetRequiredService<IoUringTransportFactory>();
var outbound = app.Services.GetRequiredService<IoUringConnectionFactory>();
app.MapGet("/proxy/transport", () => new
{
    Inbound = inbound.IsUsingIoUring ? "io_uring" : "Sockets",
    Outbound = outbound.IsUsingIoUring ? "io_uring" : "Sockets, or nothing connected yet",
    ConnectedOnRings = RingMetrics.ConnectionsConnected(),
});

await app.StartAsync();
Console.WriteLine($"Transport: {(inbound.IsUsingIoUring ? "io_uring" : "Sockets (fallback)")}");
Console.WriteLine($"Backend: {app.Configuration["ReverseProxy:Clusters:backend:Destinations:backend:Address"]}");
Console.WriteLine($"Listening on: {string.Join(", ", app.Urls)}");
await app.WaitForShutdownAsync();

/// <summary>
/// YARP's client factory, with the connections to the backend opened on io_uring: the one line
/// that matters is the ConnectCallback. YARP's shorter ConfigureHttpClient((context, handler) => ...)
/// runs in this same hook but is given no service provider, and the connection factory has to be
/// the one in DI, which shares the server's rings; so it is injected here, and this factory is
/// registered in place of YARP's default.
/// </summary>
internal sealed class IoUringForwarderHttpClientFactory(IoUringConnectionFactory connections, ILogger<ForwarderHttpClientFactory> logger)
    : ForwarderHttpClientFactory(logger)
{
    protected override void ConfigureHandler(ForwarderHttpClientContext context, SocketsHttpHandler handler)
    {
        base.ConfigureHandler(context, handler); // the cluster's HttpClient settings
        // A cluster can keep HttpClient's own sockets: "Metadata": { "UseIoUringConnectionFactory": "false" }.
        if (context.NewMetadata?.GetValueOrDefault("UseIoUringConnectionFactory") != "false")
        {
            handler.ConnectCallback = connections.ConnectStreamAsync;
        }
    }
}

internal static class RingMetrics
{
    /// <summary>The transport's <c>iouring.connections.connected</c>, summed over the rings: connections the rings connected.</summary>
    public static long ConnectionsConnected()
    {
        long total = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument is { Meter.Name: "IoUring.Transport", Name: "iouring.connections.connected" })
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => total += value);
        listener.Start();
        listener.RecordObservableInstruments();
        return total;
    }
}
