using System;
using System.Buffers;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// The connection factory's io_uring side (the shared <see cref="ClientConnectionTests"/> cover
/// what a client sees): it shares the server's rings when both are registered, counts what it
/// connects, falls back to Sockets as the server side does, and the rings' opcode allowlist has
/// connect exactly when a factory exists before they start.
/// </summary>
public class ConnectionFactoryTests
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private static IHost BuildHost(Action<IoUringTransportOptions>? configure = null, ILoggerProvider? logs = null, bool client = true)
        => TestHost.Build(
            web => web
                .UseKestrel(k => k.Listen(IPAddress.Loopback, 0))
                .UseIoUringTransport(o =>
                {
                    o.FallbackToSockets = false;
                    o.RingCount = 2;
                    o.KernelEventLoop = TransportSelector.KernelEventLoop;
                    configure?.Invoke(o);
                })
                .ConfigureServices(services =>
                {
                    if (client)
                    {
                        services.AddIoUringConnectionFactory();
                    }
                })
                .Configure(app => app.Run(context => context.Response.WriteAsync(context.Connection.RemoteIpAddress + " " + context.Request.Protocol))),
            logs);

    [Fact]
    public async Task TheFactoryRegisteredBesideTheServerConnectsOnTheServersRings()
    {
        using IHost host = BuildHost();
        await host.StartAsync(Cancel);
        IoUringTransportFactory transport = IoUringServer.FactoryOf(host.Services);
        var factory = host.Services.GetRequiredService<IoUringConnectionFactory>();
        Assert.Same(factory, host.Services.GetRequiredService<IConnectionFactory>());
        Assert.Same(transport, host.Services.GetRequiredService<IoUringTransportFactory>());

        await using (ConnectionContext connection = await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, IoUringServer.PortOf(host.Services)), Cancel))
        {
            var ring = Assert.IsType<IoUringConnection>(connection).Ring;
            Assert.Contains(ring, transport.Group!.Rings);
            Assert.Equal(1, transport.Group.Rings.Sum(r => r.ConnectionsConnected));
        }

        // HttpClient through it, to the server in the same process: both ends on the same rings.
        using var client = new HttpClient(new SocketsHttpHandler { ConnectCallback = factory.ConnectStreamAsync });
        string answer = await client.GetStringAsync($"http://127.0.0.1:{IoUringServer.PortOf(host.Services)}/", Cancel);
        Assert.Equal("127.0.0.1 HTTP/1.1", answer);
        Assert.True(factory.IsUsingIoUring);
        Assert.Equal(2, transport.Group.Rings.Sum(r => r.ConnectionsConnected));
        await host.StopAsync(Cancel);
    }

    [Fact]
    public async Task TheRingsAllowConnectOnlyWhenAFactoryIsRegistered()
    {
        using IHost withFactory = BuildHost();
        using IHost without = BuildHost(client: false);
        await withFactory.StartAsync(Cancel);
        await without.StartAsync(Cancel);

        RingThread[] restricted = IoUringServer.FactoryOf(withFactory.Services).Group!.Rings;
        RingThread[] plain = IoUringServer.FactoryOf(without.Services).Group!.Rings;
        Assert.All(restricted, r => Assert.True(r.ConnectAllowed));
        // Where the kernel has the opcode filters (Linux 7.0), a server alone cannot connect from its
        // rings; before that nothing is restricted, so everything may connect.
        Assert.All(plain, r => Assert.Equal(!r.OperationsRestricted, r.ConnectAllowed));
        Assert.Equal(restricted[0].OperationsRestricted, plain[0].OperationsRestricted);
        await withFactory.StopAsync(Cancel);
        await without.StopAsync(Cancel);
    }

    [Fact]
    public async Task AFactoryMadeAfterRestrictedRingsStartedSaysWhyItCannotConnect()
    {
        using IHost host = BuildHost(client: false);
        await host.StartAsync(Cancel);
        IoUringTransportFactory transport = IoUringServer.FactoryOf(host.Services);
        await using var factory = new IoUringConnectionFactory(transport);
        var server = new IPEndPoint(IPAddress.Loopback, IoUringServer.PortOf(host.Services));

        if (transport.Group!.Rings[0].OperationsRestricted)
        {
            var ex = await Assert.ThrowsAsync<InvalidOperationException>(async () => await factory.ConnectAsync(server, Cancel));
            Assert.Contains("AddIoUringConnectionFactory", ex.Message, StringComparison.Ordinal);
        }
        else
        {
            // No opcode filter on this kernel (before 7.0): the rings run every opcode.
            await using ConnectionContext connection = await factory.ConnectAsync(server, Cancel);
            Assert.IsType<IoUringConnection>(connection);
        }

        await host.StopAsync(Cancel);
    }

    [Fact]
    public async Task WhereIoUringIsUnavailableTheFactoryConnectsWithSocketsAfterTheOneWarning()
    {
        var logs = new CapturingLoggerProvider();
        using IHost host = BuildHost(o => o.FallbackToSockets = true, logs);
        IoUringServer.FactoryOf(host.Services).AvailabilityCheck = () => IoUringAvailability.Classify(Interop.Errno.EPERM, new IoUringAvailability.SystemState(2, 0));
        await host.StartAsync(Cancel);
        var factory = host.Services.GetRequiredService<IoUringConnectionFactory>();

        await using ConnectionContext connection = await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, IoUringServer.PortOf(host.Services)), Cancel);

        Assert.False(factory.IsUsingIoUring);
        Assert.IsNotType<IoUringConnection>(connection);
        await connection.Transport.Output.WriteAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(), Cancel);
        Assert.StartsWith("HTTP/1.1 200", await ReadSomeAsync(connection), StringComparison.Ordinal);
        Assert.Single(logs.Entries, e => e.Category == "IoUring.Transport" && e.Level == LogLevel.Warning);
        await host.StopAsync(Cancel);
    }

    [Fact]
    public async Task WhereIoUringIsUnavailableAndFallbackIsOffTheConnectThrowsTheReason()
    {
        var options = new IoUringTransportOptions { FallbackToSockets = false };
        var transport = new IoUringTransportFactory(Options.Create(options), NullLoggerFactory.Instance)
        {
            AvailabilityCheck = () => IoUringAvailability.Classify(Interop.Errno.EPERM, new IoUringAvailability.SystemState(2, 0)),
        };
        await using var factory = new IoUringConnectionFactory(transport);

        var ex = await Assert.ThrowsAsync<IoUringUnavailableException>(async () => await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, 1), Cancel));

        Assert.Equal(IoUringUnavailableReason.DisabledBySysctl, ex.Reason);
    }

    [Fact]
    public async Task SwitchedOffByConfigurationTheFactoryConnectsWithSockets()
    {
        await using var server = await IoUringServer.StartAsync(_ => { });
        var transport = new IoUringTransportFactory(Options.Create(new IoUringTransportOptions { Enabled = false }), NullLoggerFactory.Instance);
        await using var factory = new IoUringConnectionFactory(transport);

        await using ConnectionContext connection = await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port), Cancel);

        Assert.False(factory.IsUsingIoUring);
        Assert.IsNotType<IoUringConnection>(connection);
    }

    private static async Task<string> ReadSomeAsync(ConnectionContext connection)
    {
        System.IO.Pipelines.ReadResult result = await connection.Transport.Input.ReadAsync(Cancel).AsTask().DefaultTimeout();
        string text = System.Text.Encoding.ASCII.GetString(BuffersExtensions.ToArray(result.Buffer));
        connection.Transport.Input.AdvanceTo(result.Buffer.End);
        return text;
    }
}
