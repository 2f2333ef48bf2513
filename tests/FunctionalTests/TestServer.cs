using System;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace IoUring.FunctionalTests;

/// <summary>A real Kestrel host on the transport under test, bound to loopback.</summary>
public sealed class TestServer : IAsyncDisposable
{
    private readonly IHost _host;

    private TestServer(IHost host)
    {
        _host = host;
        var addresses = host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        Addresses = addresses.ToArray();
    }

    public string[] Addresses { get; }

    /// <summary>The first bound address, e.g. http://127.0.0.1:41234.</summary>
    public Uri BaseAddress => new(Addresses[0].Replace("[::]", "[::1]", StringComparison.Ordinal).Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal));

    public int Port => BaseAddress.Port;

    public IServiceProvider Services => _host.Services;

    /// <summary>Starts a host with an HTTP app on 127.0.0.1:0 (unless <paramref name="configureKestrel"/> binds otherwise).</summary>
    public static async Task<TestServer> StartAsync(
        Action<IApplicationBuilder> configureApp,
        Action<KestrelServerOptions>? configureKestrel = null,
        Action<IServiceCollection>? configureServices = null)
    {
        IHost host = new HostBuilder()
            .ConfigureLogging(logging => logging.SetMinimumLevel(LogLevel.Warning))
            .ConfigureWebHost(web => web
                .UseKestrel(options =>
                {
                    if (configureKestrel is null)
                    {
                        options.Listen(IPAddress.Loopback, 0);
                    }
                    else
                    {
                        configureKestrel(options);
                    }
                })
                .UseTestTransport()
                .ConfigureServices(services =>
                {
                    services.AddRouting();
                    configureServices?.Invoke(services);
                })
                .Configure(configureApp))
            .Build();
        await host.StartAsync().ConfigureAwait(false);
        return new TestServer(host);
    }

    public HttpClient CreateClient(Version? version = null, HttpMessageHandler? handler = null)
    {
        var client = new HttpClient(handler ?? new SocketsHttpHandler(), disposeHandler: true)
        {
            BaseAddress = BaseAddress,
            Timeout = TimeSpan.FromSeconds(60),
        };
        if (version is not null)
        {
            client.DefaultRequestVersion = version;
            client.DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        }

        return client;
    }

    /// <summary>Disposes the host without stopping it first, as a <c>using</c> of a started host does: Kestrel stops with an already-cancelled token.</summary>
    public void DisposeWithoutStopping() => _host.Dispose();

    public Task StopAsync(TimeSpan timeout) => _host.StopAsync(new System.Threading.CancellationTokenSource(timeout).Token);

    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync().ConfigureAwait(false);
        _host.Dispose();
    }
}
