using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Starting: switched off by configuration, kernel features logged, io_uring unavailable (fallback or failure), invalid options.</summary>
/// <remarks>In the isolated collection, as before the split: one of them counts the process's descriptors and threads.</remarks>
[Collection(IsolatedCollection.Name)]
public class StartupTests
{
    [Fact]
    public async Task DisabledFromConfigurationServesOnSockets()
    {
        string? connectionType = null;
        using IHost host = TestHost.Build(
            web => web
                .UseKestrel(k => k.Listen(IPAddress.Loopback, 0, listen => listen.Use(next => connection =>
                {
                    connectionType = connection.GetType().Name;
                    return next(connection);
                })))
                .UseIoUringTransport()
                .Configure(app => app.Run(context => context.Response.WriteAsync("sockets"))),
            configuration: new Dictionary<string, string?> { ["IoUring:Enabled"] = "false" });
        await host.StartAsync(TestContext.Current.CancellationToken);
        int port = IoUringServer.PortOf(host.Services);
        using var client = new HttpClient();
        Assert.Equal("sockets", await client.GetStringAsync($"http://127.0.0.1:{port}/", TestContext.Current.CancellationToken));
        Assert.NotEqual("IoUringConnection", connectionType);
        Assert.False(IoUringServer.FactoryOf(host.Services).IsUsingIoUring);
        await host.StopAsync(TestContext.Current.CancellationToken);
    }

    [Fact]
    public async Task KernelFeaturesAreLoggedOnceAtStartAtDebug()
    {
        var logs = new CapturingLoggerProvider();
        using IHost host = BuildHost(logs, fallback: false, listeners: 2);
        await host.StartAsync(TestContext.Current.CancellationToken);
        var features = Assert.Single(logs.Entries, e => e.EventId.Name == "RingFeatures");
        Assert.Equal(LogLevel.Debug, features.Level);
        // What the running kernel has, by the version that added it: receive bundles came in Linux
        // 6.10 (IORING_FEAT_RECVSEND_BUNDLE), SEND_ZC in 6.0.
        Version kernel = Environment.OSVersion.Version;
        Assert.Contains($"recv bundles {kernel >= new Version(6, 10)}", features.Message, StringComparison.Ordinal);
        Assert.Contains($"SEND_ZC {kernel >= new Version(6, 0)}", features.Message, StringComparison.Ordinal);
        await host.StopAsync(TestContext.Current.CancellationToken);
    }

    [Fact]
    public async Task UnavailableIoUringFallsBackWithOneWarningNamingTheReason()
    {
        var logs = new CapturingLoggerProvider();
        using IHost host = BuildHost(logs, fallback: true, listeners: 2);
        IoUringServer.FactoryOf(host.Services).AvailabilityCheck = () => IoUringAvailability.Classify(Interop.Errno.EPERM, new IoUringAvailability.SystemState(2, 0));
        await host.StartAsync(TestContext.Current.CancellationToken);
        Assert.False(IoUringServer.FactoryOf(host.Services).IsUsingIoUring);
        var warnings = logs.Entries.Where(e => e.Category == "IoUring.Transport" && e.Level == LogLevel.Warning).ToList();
        var warning = Assert.Single(warnings);
        Assert.Contains("kernel.io_uring_disabled is 2", warning.Message, StringComparison.Ordinal);
        await host.StopAsync(TestContext.Current.CancellationToken);
    }

    [Fact]
    public async Task UnavailableIoUringWithoutFallbackFailsAtStartWithTheReason()
    {
        using IHost host = BuildHost(new CapturingLoggerProvider(), fallback: false, listeners: 1);
        IoUringServer.FactoryOf(host.Services).AvailabilityCheck = () => IoUringAvailability.Classify(Interop.Errno.ENOSYS, new IoUringAvailability.SystemState(null, 2));
        var ex = await Assert.ThrowsAsync<IoUringUnavailableException>(() => host.StartAsync(TestContext.Current.CancellationToken));
        Assert.Equal(IoUringUnavailableReason.BlockedBySecurityPolicy, ex.Reason);
    }

    [Fact]
    public async Task InvalidOptionsFailAtStartNamingTheOption()
    {
        using IHost host = TestHost.Build(web => web
            .UseKestrel(k => k.Listen(IPAddress.Loopback, 0))
            .UseIoUringTransport(o => o.ReceiveBufferCount = 1000)
            .Configure(app => app.Run(context => context.Response.WriteAsync("x"))));
        var ex = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => host.StartAsync(TestContext.Current.CancellationToken));
        Assert.Contains("ReceiveBufferCount must be a power of two", ex.Message, StringComparison.Ordinal);
    }

    private static IHost BuildHost(CapturingLoggerProvider logs, bool fallback, int listeners)
        => TestHost.Build(
            web => web
                .UseKestrel(k =>
                {
                    for (int i = 0; i < listeners; i++)
                    {
                        k.Listen(IPAddress.Loopback, 0);
                    }
                })
                .UseIoUringTransport(o => o.FallbackToSockets = fallback)
                .Configure(app => app.Run(context => context.Response.WriteAsync("x"))),
            logs,
            LogLevel.Debug);
}
