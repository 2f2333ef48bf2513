using System;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace IoUring.FunctionalTests;

public class ShutdownTests
{
    [Fact]
    public Task GracefulShutdownCompletesTheRequestInFlight()
        => StopWithARequestInFlightAsync((_, stopping) =>
        {
            Assert.False(stopping.IsCompleted, "stop must wait for the request in flight");
            return Task.CompletedTask;
        });

    [Fact]
    public Task StopRefusesNewConnectionsWhileTheRequestInFlightFinishes()
        => StopWithARequestInFlightAsync(async (server, _) =>
        {
            // Unbinding takes effect soon, not at once: probe until a connection is refused. A
            // probe that got in before that is an ordinary connection the server must close; one
            // still in the listening socket's queue when it closed is reset by the kernel.
            await TestWait.UntilAsync(
                async () =>
                {
                    try
                    {
                        using RawConnection probe = await RawConnection.ConnectAsync(server.Port);
                        return false;
                    }
                    catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionRefused)
                    {
                        return true;
                    }
                    catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
                    {
                        return false; // queued when the listening socket closed: probe again
                    }
                },
                () => "the listener still accepts connections after stop began");
        });

    [Fact]
    public async Task DisposingAStartedHostWithoutStoppingItReleasesItsPortAndDoesNotThrow()
    {
        TestServer server = await TestServer.StartAsync(app => app.Run(context => context.Response.WriteAsync("ok")));
        RawConnection idle;
        using (HttpClient client = server.CreateClient())
        {
            Assert.Equal("ok", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
            idle = await RawConnection.ConnectAsync(server.Port);
            await idle.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.True(await idle.ReceiveAsync(new byte[1024]) > 0);

            // Kestrel's Dispose stops with a cancelled token; no exception may come out of it.
            server.DisposeWithoutStopping();
        }

        // The connection that stayed open is closed, and the port is free for a new listener.
        using (idle)
        {
            (_, _) = await idle.ReadToEndOrResetAsync().DefaultTimeout();
            using var rebind = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            rebind.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            rebind.Bind(new IPEndPoint(IPAddress.Loopback, server.Port));
            rebind.Listen();
        }
    }

    /// <summary>
    /// Starts a request that waits, begins a graceful stop, runs <paramref name="whileStopping"/>,
    /// then lets the request finish: it must complete, and so must the stop.
    /// </summary>
    private static async Task StopWithARequestInFlightAsync(Func<TestServer, Task, Task> whileStopping)
    {
        var requestStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        TestServer server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            requestStarted.TrySetResult();
            await release.Task;
            await context.Response.WriteAsync("finished");
        }));
        await using (server)
        {
            using HttpClient client = server.CreateClient();
            Task<string> request = client.GetStringAsync("/", TestContext.Current.CancellationToken);
            await requestStarted.Task.DefaultTimeout();
            Task stopping = server.StopAsync(TestWait.Default);

            await whileStopping(server, stopping);

            Assert.False(request.IsCompleted);
            release.SetResult();
            Assert.Equal("finished", await request.DefaultTimeout());
            await stopping.DefaultTimeout();
        }
    }
}
