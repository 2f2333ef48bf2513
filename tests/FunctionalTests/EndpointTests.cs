using System;
using System.IO;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Endpoint kinds: IPv6, dual mode, Unix domain sockets, adopted handles, port 0, ports in use.</summary>
public class EndpointTests
{
    private static void Hello(IApplicationBuilder app) => app.Run(context => context.Response.WriteAsync($"{context.Request.Protocol} {context.Connection.RemoteIpAddress}"));

    [Fact]
    public async Task IPv6Loopback()
    {
        await using var server = await TestServer.StartAsync(Hello, kestrel => kestrel.Listen(IPAddress.IPv6Loopback, 0));
        Assert.StartsWith("http://[::1]:", server.Addresses[0], StringComparison.Ordinal);
        using HttpClient client = server.CreateClient();
        Assert.Equal("HTTP/1.1 ::1", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task IPv6AnyAcceptsIPv4ClientsInDualMode()
    {
        await using var server = await TestServer.StartAsync(Hello, kestrel => kestrel.Listen(IPAddress.IPv6Any, 0));
        using var client = new HttpClient();
        string v4 = await client.GetStringAsync($"http://127.0.0.1:{server.Port}/", TestContext.Current.CancellationToken);
        Assert.Equal("HTTP/1.1 ::ffff:127.0.0.1", v4);
        string v6 = await client.GetStringAsync($"http://[::1]:{server.Port}/", TestContext.Current.CancellationToken);
        Assert.Equal("HTTP/1.1 ::1", v6);
    }

    [Fact]
    public async Task PortZeroReportsTheBoundPort()
    {
        await using var server = await TestServer.StartAsync(Hello);
        Assert.NotEqual(0, server.Port);
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
    }

    [Fact]
    public async Task PortInUseFailsWithAddressInUse()
    {
        using var holder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        holder.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        holder.Listen();
        int port = ((IPEndPoint)holder.LocalEndPoint!).Port;
        var ex = await Assert.ThrowsAnyAsync<Exception>(() => TestServer.StartAsync(Hello, kestrel => kestrel.Listen(IPAddress.Loopback, port)));
        Assert.True(ex is AddressInUseException || ex.InnerException is AddressInUseException, ex.ToString());
    }

    [Fact]
    public async Task UnixDomainSocket()
    {
        string path = Path.Combine(Path.GetTempPath(), $"iouring-{Guid.NewGuid():N}.sock");
        try
        {
            TestServer server = await TestServer.StartAsync(
                app => app.Run(context => context.Response.WriteAsync("unix " + TransportSelector.Name)),
                kestrel => kestrel.ListenUnixSocket(path));
            Assert.True(File.Exists(path));
            using HttpClient client = UnixClient(path);
            for (int i = 0; i < 10; i++)
            {
                Assert.Equal("unix " + TransportSelector.Name, await client.GetStringAsync("http://localhost/", TestContext.Current.CancellationToken));
            }

            // Several connections: the single Unix listener hands them to the rings in turn (by load,
            // with the io_uring transport's kernel event loop).
            var tasks = new Task<string>[20];
            for (int i = 0; i < tasks.Length; i++)
            {
                tasks[i] = Task.Run(async () =>
                {
                    using HttpClient c = UnixClient(path);
                    return await c.GetStringAsync("http://localhost/");
                });
            }

            Assert.All(await Task.WhenAll(tasks), s => Assert.Equal("unix " + TransportSelector.Name, s));
            await server.DisposeAsync();
            Assert.False(File.Exists(path), "the listener removes its socket file when it stops");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task AdoptedListenHandle()
    {
        // As systemd socket activation does: a bound, listening descriptor that the server owns.
        ulong handle;
        int port;
        using (var listenSocket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            listenSocket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listenSocket.Listen(128);
            port = ((IPEndPoint)listenSocket.LocalEndPoint!).Port;
            handle = (ulong)NativeMethods.Dup((int)listenSocket.SafeHandle.DangerousGetHandle());
        }

        await using var server = await TestServer.StartAsync(Hello, kestrel => kestrel.ListenHandle(handle));
        using var client = new HttpClient();
        Assert.Equal("HTTP/1.1 127.0.0.1", await client.GetStringAsync($"http://127.0.0.1:{port}/", TestContext.Current.CancellationToken));
    }

    internal static HttpClient UnixClient(string path) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (_, _) =>
        {
            RawConnection connection = await RawConnection.ConnectUnixAsync(path);
            return new NetworkStream(connection.Socket, ownsSocket: true); // the stream owns the socket from here on
        },
    });
}
