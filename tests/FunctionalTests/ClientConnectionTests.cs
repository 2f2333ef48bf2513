using System;
using System.IO;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// The io_uring client side (<see cref="IoUringConnectionFactory"/>) against the server transport
/// under test: raw connections over TCP (IPv4, IPv6) and Unix sockets, HttpClient over its connect
/// callback (HTTP/1.1, HTTP/2, TLS), and connect errors, timeouts and cancellation as
/// Socket.ConnectAsync reports them. The client is always io_uring; the suite runs once per server.
/// </summary>
public class ClientConnectionTests
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    /// <summary>
    /// A client factory of its own (not sharing the server's rings), io_uring required, its rings'
    /// loops where <c>IOURING_TEST_KERNEL_EVENT_LOOP</c> says (the 7.2 leg runs them in the kernel).
    /// </summary>
    internal static IoUringConnectionFactory CreateFactory(Action<IoUringTransportOptions>? configure = null)
    {
        var options = new IoUringTransportOptions
        {
            FallbackToSockets = false,
            RingCount = 2,
            KernelEventLoop = Environment.GetEnvironmentVariable("IOURING_TEST_KERNEL_EVENT_LOOP") is { Length: > 0 } mode
                ? Enum.Parse<KernelEventLoop>(mode, ignoreCase: true)
                : KernelEventLoop.Off,
        };
        configure?.Invoke(options);
        return new IoUringConnectionFactory(new IoUringTransportFactory(Options.Create(options), NullLoggerFactory.Instance));
    }

    private static Task<TestServer> StartEchoAsync(Action<KestrelServerOptions> listen) => TestServer.StartAsync(_ => { }, listen);

    /// <summary>
    /// Sends <paramref name="payload"/> and reads until as many bytes came back. (No half-close: as on
    /// Kestrel's Sockets transport, completing a connection's output shuts the whole socket down.)
    /// </summary>
    private static async Task<byte[]> EchoAsync(ConnectionContext connection, byte[] payload)
    {
        Task<FlushResult> writing = connection.Transport.Output.WriteAsync(payload, Cancel).AsTask();
        var received = new MemoryStream();
        PipeReader input = connection.Transport.Input;
        while (received.Length < payload.Length)
        {
            ReadResult result = await input.ReadAsync(Cancel).AsTask().DefaultTimeout();
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                received.Write(segment.Span);
            }

            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;
            }
        }

        await writing.DefaultTimeout();
        return received.ToArray();
    }

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("::1")]
    public async Task EchoesOverTcp(string address)
    {
        await using var server = await StartEchoAsync(k => k.Listen(IPAddress.Parse(address), 0, ConnectionMiddlewareTests.Echo));
        await using IoUringConnectionFactory factory = CreateFactory();
        var payload = new byte[3 << 20]; // more than one send and one receive buffer
        Random.Shared.NextBytes(payload);

        await using ConnectionContext connection = await factory.ConnectAsync(new IPEndPoint(IPAddress.Parse(address), server.Port), Cancel);

        Assert.True(factory.IsUsingIoUring);
        Assert.Equal(new IPEndPoint(IPAddress.Parse(address), server.Port), connection.RemoteEndPoint);
        Assert.Equal(IPAddress.Parse(address), Assert.IsType<IPEndPoint>(connection.LocalEndPoint).Address);
        Assert.Equal(payload, await EchoAsync(connection, payload));
    }

    [Fact]
    public async Task EchoesOverAUnixSocket()
    {
        string path = Path.Combine(Path.GetTempPath(), $"iouring-client-{Guid.NewGuid():N}.sock");
        await using var server = await StartEchoAsync(k => k.ListenUnixSocket(path, ConnectionMiddlewareTests.Echo));
        await using IoUringConnectionFactory factory = CreateFactory();
        byte[] payload = Encoding.ASCII.GetBytes("over a unix socket");

        await using ConnectionContext connection = await factory.ConnectAsync(new UnixDomainSocketEndPoint(path), Cancel);

        Assert.Equal(payload, await EchoAsync(connection, payload));
    }

    [Fact]
    public async Task ConnectsToADnsEndPoint()
    {
        await using var server = await StartEchoAsync(k => k.Listen(IPAddress.Loopback, 0, ConnectionMiddlewareTests.Echo));
        await using IoUringConnectionFactory factory = CreateFactory();

        await using ConnectionContext connection = await factory.ConnectAsync(new DnsEndPoint("localhost", server.Port, AddressFamily.InterNetwork), Cancel);

        Assert.Equal(new IPEndPoint(IPAddress.Loopback, server.Port), connection.RemoteEndPoint);
        Assert.Equal("dns"u8.ToArray(), await EchoAsync(connection, "dns"u8.ToArray()));
    }

    [Fact]
    public async Task ManyConnectionsAtOnceEachGetTheirOwnEcho()
    {
        await using var server = await StartEchoAsync(k => k.Listen(IPAddress.Loopback, 0, ConnectionMiddlewareTests.Echo));
        await using IoUringConnectionFactory factory = CreateFactory();
        var tasks = new Task[64];
        for (int i = 0; i < tasks.Length; i++)
        {
            byte[] payload = Encoding.ASCII.GetBytes($"connection {i}");
            tasks[i] = Task.Run(async () =>
            {
                await using ConnectionContext connection = await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port), Cancel);
                Assert.Equal(payload, await EchoAsync(connection, payload));
            }, Cancel);
        }

        await Task.WhenAll(tasks).DefaultTimeout();
    }

    [Theory]
    [InlineData("1.1")]
    [InlineData("2.0")]
    public async Task HttpClientRunsOverTheConnectCallback(string version)
    {
        await using var server = await TestServer.StartAsync(
            app => app.Run(async context =>
            {
                using var body = new MemoryStream();
                await context.Request.Body.CopyToAsync(body);
                await context.Response.WriteAsync($"{context.Request.Protocol} {body.Length}");
            }),
            k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = version == "2.0" ? HttpProtocols.Http2 : HttpProtocols.Http1));
        await using IoUringConnectionFactory factory = CreateFactory();
        using HttpClient client = server.CreateClient(Version.Parse(version), new SocketsHttpHandler { ConnectCallback = factory.ConnectStreamAsync });

        for (int i = 0; i < 3; i++) // the same connection again (keep-alive, or one HTTP/2 connection)
        {
            using var content = new ByteArrayContent(new byte[1 << 20]);
            using HttpResponseMessage response = await client.PostAsync("/", content, Cancel);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(version == "2.0" ? "HTTP/2 1048576" : "HTTP/1.1 1048576", await response.Content.ReadAsStringAsync(Cancel));
        }
    }

    [Fact]
    public async Task HttpClientRunsTlsOverTheConnectCallback()
    {
        using X509Certificate2 certificate = Http2Tests.CreateSelfSignedCertificate();
        await using var server = await TestServer.StartAsync(
            app => app.Run(context => context.Response.WriteAsync($"{context.Request.Protocol} tls={context.Request.IsHttps}")),
            k => k.Listen(IPAddress.Loopback, 0, l =>
            {
                l.Protocols = HttpProtocols.Http1AndHttp2;
                l.UseHttps(certificate);
            }));
        await using IoUringConnectionFactory factory = CreateFactory();
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = factory.ConnectStreamAsync,
            SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, presented, _, _) => presented is not null && presented.GetCertHashString() == certificate.GetCertHashString(),
            },
        };
        using HttpClient client = server.CreateClient(HttpVersion.Version20, handler);

        Assert.Equal("HTTP/2 tls=True", await client.GetStringAsync("/", Cancel));
    }

    [Fact]
    public async Task TheServerClosingEndsTheInput()
    {
        await using var server = await StartEchoAsync(k => k.Listen(IPAddress.Loopback, 0, l => l.Run(async connection =>
        {
            await connection.Transport.Output.WriteAsync("bye"u8.ToArray());
        })));
        await using IoUringConnectionFactory factory = CreateFactory();
        await using ConnectionContext connection = await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port), Cancel);

        var received = new MemoryStream();
        while (true)
        {
            ReadResult result = await connection.Transport.Input.ReadAsync(Cancel).AsTask().DefaultTimeout();
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                received.Write(segment.Span);
            }

            connection.Transport.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;
            }
        }

        Assert.Equal("bye", Encoding.ASCII.GetString(received.ToArray()));
        await TestWait.UntilAsync(() => connection.ConnectionClosed.IsCancellationRequested, () => "ConnectionClosed did not fire after the server's FIN");
    }

    [Fact]
    public async Task ARefusedConnectThrowsWhatSocketsThrows()
    {
        int port = FreePort();
        await using IoUringConnectionFactory factory = CreateFactory();

        SocketException expected = await Assert.ThrowsAsync<SocketException>(() => SocketConnectAsync(new IPEndPoint(IPAddress.Loopback, port)));
        SocketException actual = await Assert.ThrowsAsync<SocketException>(async () => await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), Cancel));

        Assert.Equal(SocketError.ConnectionRefused, expected.SocketErrorCode);
        Assert.Equal(expected.SocketErrorCode, actual.SocketErrorCode);
        Assert.Contains("connect", actual.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AMissingUnixSocketThrowsWhatSocketsThrows()
    {
        var endPoint = new UnixDomainSocketEndPoint(Path.Combine(Path.GetTempPath(), $"iouring-missing-{Guid.NewGuid():N}.sock"));
        await using IoUringConnectionFactory factory = CreateFactory();

        SocketException expected = await Assert.ThrowsAsync<SocketException>(() => SocketConnectAsync(endPoint));
        SocketException actual = await Assert.ThrowsAsync<SocketException>(async () => await factory.ConnectAsync(endPoint, Cancel));

        Assert.Equal(expected.SocketErrorCode, actual.SocketErrorCode);
    }

    [Fact]
    public async Task AConnectThatHangsEndsWhenCancelledAndTheRingServesOn()
    {
        using BlackHole blackHole = await BlackHole.CreateAsync();
        IPEndPoint target = blackHole.EndPoint;
        await using IoUringConnectionFactory factory = CreateFactory(o => o.RingCount = 1);

        using var timeout = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        OperationCanceledException cancelled = await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await factory.ConnectAsync(target, timeout.Token));
        Assert.Equal(timeout.Token, cancelled.CancellationToken);

        // The same ring connects elsewhere at once.
        await using var server = await StartEchoAsync(k => k.Listen(IPAddress.Loopback, 0, ConnectionMiddlewareTests.Echo));
        await using ConnectionContext connection = await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port), Cancel);
        Assert.Equal("ok"u8.ToArray(), await EchoAsync(connection, "ok"u8.ToArray()));
    }

    [Fact]
    public async Task HttpClientsConnectTimeoutEndsAHangingConnectAsWithSockets()
    {
        using BlackHole blackHole = await BlackHole.CreateAsync();
        await using IoUringConnectionFactory factory = CreateFactory(o => o.RingCount = 1);
        var uri = new Uri($"http://127.0.0.1:{blackHole.EndPoint.Port}/");

        using var sockets = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromMilliseconds(200) });
        using var ioUring = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromMilliseconds(200), ConnectCallback = factory.ConnectStreamAsync });
        Exception expected = await Assert.ThrowsAnyAsync<Exception>(() => sockets.GetAsync(uri, Cancel));
        Exception actual = await Assert.ThrowsAnyAsync<Exception>(() => ioUring.GetAsync(uri, Cancel));

        Assert.Equal(expected.GetType(), actual.GetType());
        Assert.Equal(expected.InnerException?.GetType(), actual.InnerException?.GetType());
        Assert.IsType<TimeoutException>(actual.InnerException);
    }

    [Fact]
    public async Task AnAlreadyCancelledTokenThrowsBeforeConnecting()
    {
        await using IoUringConnectionFactory factory = CreateFactory();
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, 1), cancelled.Token));
        Assert.False(factory.IsUsingIoUring, "no ring should have been started for it");
    }

    [Fact]
    public async Task AnUnsupportedEndPointIsRefusedByName()
    {
        await using IoUringConnectionFactory factory = CreateFactory();

        NotSupportedException ex = await Assert.ThrowsAsync<NotSupportedException>(async () => await factory.ConnectAsync(new UnsupportedEndPoint(), Cancel));

        Assert.Contains(nameof(UnsupportedEndPoint), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DisposingTheFactoryAbortsItsConnectionsAndRefusesNewOnes()
    {
        await using var server = await StartEchoAsync(k => k.Listen(IPAddress.Loopback, 0, ConnectionMiddlewareTests.Echo));
        server.ExpectServerErrors(m => m.Contains("reset", StringComparison.OrdinalIgnoreCase)); // the abort resets the echo's connection
        IoUringConnectionFactory factory = CreateFactory();
        ConnectionContext connection = await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port), Cancel);

        await factory.DisposeAsync().AsTask().DefaultTimeout();

        Assert.True(connection.ConnectionClosed.IsCancellationRequested, "the factory's dispose waits for its rings, so its connections have closed");
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await factory.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.Port), Cancel));
        await connection.DisposeAsync();
    }

    private static async Task SocketConnectAsync(EndPoint endPoint)
    {
        using var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint, Cancel);
    }

    private static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port; // closed again: nothing listens there
    }

    private sealed class UnsupportedEndPoint : EndPoint
    {
    }

    /// <summary>
    /// A loopback listener whose accept queue is full and never drained: Linux drops further SYNs,
    /// so a connect to it waits (retransmitting) until it is cancelled.
    /// </summary>
    private sealed class BlackHole : IDisposable
    {
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly System.Collections.Generic.List<Socket> _queued = [];

        public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndPoint!;

        public static async Task<BlackHole> CreateAsync()
        {
            var hole = new BlackHole();
            hole._listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            hole._listener.Listen(1);
            // The queue holds backlog + 1 connections; the SYN of the one after is dropped.
            for (int i = 0; i < 16; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                hole._queued.Add(socket);
                using var attempt = new CancellationTokenSource(TimeSpan.FromMilliseconds(100 * TestWait.Scale()));
                try
                {
                    await socket.ConnectAsync(hole.EndPoint, attempt.Token);
                }
                catch (OperationCanceledException)
                {
                    return hole; // this one hangs: the queue is full
                }
            }

            hole.Dispose();
            throw new InvalidOperationException("The accept queue never filled: the kernel accepted 16 connections on a backlog of 1.");
        }

        public void Dispose()
        {
            foreach (Socket socket in _queued)
            {
                socket.Dispose();
            }

            _listener.Dispose();
        }
    }
}
