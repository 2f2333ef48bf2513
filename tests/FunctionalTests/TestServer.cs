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

/// <summary>
/// A real Kestrel host on the transport under test, bound to loopback. Disposing it fails the test
/// if the server logged an error (Kestrel's unhandled application exceptions, the transport's
/// failures) that the test did not say it expects (<see cref="ExpectServerErrors"/>): a bug that
/// only shows in the log, such as a 500 from an exception in the transport, fails loudly.
/// </summary>
public sealed class TestServer : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly CapturingLoggerProvider _logs;
    private Func<string, bool> _expectedError = static _ => false;

    private TestServer(IHost host, CapturingLoggerProvider logs)
    {
        _host = host;
        _logs = logs;
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
        var logs = new CapturingLoggerProvider();
        IHost host = TestHost.Build(
            web => web
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
                .Configure(configureApp),
            logs);
        await host.StartAsync().ConfigureAwait(false);
        return new TestServer(host, logs);
    }

    public HttpClient CreateClient(Version? version = null, HttpMessageHandler? handler = null)
    {
        var client = new HttpClient(handler ?? new SocketsHttpHandler(), disposeHandler: true)
        {
            BaseAddress = BaseAddress,
            Timeout = TestWait.Default * 2,
        };
        if (version is not null)
        {
            client.DefaultRequestVersion = version;
            client.DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        }

        return client;
    }

    /// <summary>Disposes the host without stopping it first, as a <c>using</c> of a started host does: Kestrel stops with an already-cancelled token.</summary>
    public void DisposeWithoutStopping()
    {
        _host.Dispose();
        AssertNoUnexpectedErrors();
    }

    public Task StopAsync(TimeSpan timeout) => _host.StopAsync(new System.Threading.CancellationTokenSource(timeout).Token);

    /// <summary>
    /// The test provokes errors the server logs (an application that throws, say): disposing does
    /// not fail on those whose message <paramref name="expected"/> accepts.
    /// </summary>
    public void ExpectServerErrors(Func<string, bool> expected) => _expectedError = expected;

    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync().ConfigureAwait(false);
        _host.Dispose();
        AssertNoUnexpectedErrors();
    }

    private void AssertNoUnexpectedErrors()
    {
        var errors = _logs.Entries.Where(e => e.Level >= LogLevel.Error && !_expectedError(e.Message)).ToList();
        if (errors.Count > 0)
        {
            Xunit.Assert.Fail($"The server logged {errors.Count} unexpected error(s); the first: [{errors[0].Category}] {errors[0].Message}");
        }
    }
}
