using System;
using System.Linq;
using System.Net;
using System.Threading.Tasks;
using IoUring.Transport;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace IoUring.FunctionalTests;

/// <summary>
/// A started host on the io_uring transport (no fallback to sockets) with one loopback endpoint on
/// an ephemeral port: the one place the io_uring-only tests build their servers.
/// </summary>
internal sealed class IoUringServer : IAsyncDisposable
{
    private readonly IHost _host;
    private bool _stopped;

    private IoUringServer(IHost host)
    {
        _host = host;
        Port = PortOf(host.Services);
        Factory = FactoryOf(host.Services);
        Group = Factory.Group!;
    }

    /// <summary>The port the endpoint is bound to.</summary>
    public int Port { get; }

    public IoUringTransportFactory Factory { get; }

    public RingGroup Group { get; }

    public IServiceProvider Services => _host.Services;

    /// <summary>
    /// The port a started host's first IP endpoint is bound to. Endpoints a test adds before it (a
    /// Unix socket: "http://unix:/path", an adopted handle: "http://&lt;file handle&gt;") have none.
    /// </summary>
    public static int PortOf(IServiceProvider services)
        => services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses
            .Select(a => Uri.TryCreate(a, UriKind.Absolute, out Uri? uri) && uri.HostNameType is UriHostNameType.IPv4 or UriHostNameType.IPv6 ? uri.Port : 0)
            .First(port => port > 0);

    /// <summary>The io_uring transport factory of a host's services (registered beside Sockets').</summary>
    public static IoUringTransportFactory FactoryOf(IServiceProvider services)
        => services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().Single();

    /// <summary>
    /// The test hooks of a host's io_uring transport, made on first use: the ring threads read them
    /// from the options on every use, so setting one takes effect on the next send.
    /// </summary>
    public static TransportTestHooks HooksOf(IServiceProvider services)
    {
        IoUringTransportOptions options = services.GetRequiredService<Microsoft.Extensions.Options.IOptions<IoUringTransportOptions>>().Value;
        return options.TestHooks ??= new TransportTestHooks();
    }

    /// <param name="configure">The transport's options; <see cref="IoUringTransportOptions.FallbackToSockets"/> is already off.</param>
    /// <param name="listen">The endpoint's connection pipeline (connection middleware, if any).</param>
    /// <param name="app">The HTTP application; none answers with an empty 200.</param>
    /// <param name="kestrel">Kestrel's options, applied before the endpoint is added.</param>
    /// <param name="logs">A provider that sees the host's log, from <paramref name="minimumLevel"/> up.</param>
    /// <param name="minimumLevel">The least level logged: Debug for tests that capture debug events.</param>
    public static async Task<IoUringServer> StartAsync(
        Action<IoUringTransportOptions> configure,
        Action<ListenOptions>? listen = null,
        RequestDelegate? app = null,
        Action<KestrelServerOptions>? kestrel = null,
        ILoggerProvider? logs = null,
        LogLevel minimumLevel = LogLevel.Warning)
    {
        IHost host = TestHost.Build(
            web => web
                .UseKestrel(k =>
                {
                    kestrel?.Invoke(k);
                    k.Listen(IPAddress.Loopback, 0, listen ?? (_ => { }));
                })
                .UseIoUringTransport(o =>
                {
                    o.FallbackToSockets = false;
                    o.KernelEventLoop = TransportSelector.KernelEventLoop;
                    configure(o);
                })
                .Configure(a => a.Run(app ?? (_ => Task.CompletedTask))),
            logs,
            minimumLevel);
        try
        {
            await host.StartAsync().ConfigureAwait(false);
        }
        catch
        {
            host.Dispose();
            throw;
        }

        return new IoUringServer(host);
    }

    /// <summary>Stops the host (once), for tests that check what stopping leaves behind.</summary>
    public async Task StopAsync()
    {
        if (!_stopped)
        {
            _stopped = true;
            await _host.StopAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _host.Dispose();
    }
}
