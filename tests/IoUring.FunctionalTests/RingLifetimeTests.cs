using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>A ring that fails ends its own connections only; an endpoint whose every ring failed says so; a stopping ring serves its open connections.</summary>
/// <remarks>In the isolated collection, as before the split: one of them counts the process's descriptors and threads.</remarks>
[Collection(IsolatedCollection.Name)]
public class RingLifetimeTests
{
    [Fact]
    public async Task ARingThatFailsAbortsItsConnectionsWhileTheOtherRingsServeOn()
    {
        var logs = new CapturingLoggerProvider();
        var ringOfClientPort = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => o.RingCount = 2,
            listen => listen.Run(async connection =>
                {
                    ringOfClientPort[((IPEndPoint)connection.RemoteEndPoint!).Port] = ((IoUringConnection)connection).Ring.Index;
                    try
                    {
                        await ConnectionMiddlewareTests.EchoAsync(connection);
                    }
                    catch (ConnectionAbortedException)
                    {
                        // this connection's ring failed
                    }
                }),
            logs: logs);
        int port = server.Port;
        RingGroup group = server.Group;

        async Task<RawConnection> ConnectAndEcho()
        {
            RawConnection connection = await RawConnection.ConnectAsync(port);
            await connection.SendAsync("hello");
            var buffer = new byte[5];
            Assert.Equal(5, await connection.ReceiveAsync(buffer));
            return connection;
        }

        // Open connections until both rings hold some (the kernel's reuseport hash decides).
        var clients = new List<RawConnection>();
        try
        {
            while (clients.Count < 8 || ringOfClientPort.Values.Distinct().Count() < 2)
            {
                Assert.True(clients.Count < 200, "the kernel never spread connections over both rings");
                clients.Add(await ConnectAndEcho());
            }

            group.Rings[0].Post(new ThrowingWork(), 0);

            foreach (RawConnection client in clients)
            {
                int ring = ringOfClientPort[((IPEndPoint)client.Socket.LocalEndPoint!).Port];
                var buffer = new byte[16];
                if (ring == 0)
                {
                    // Aborted: a reset (or, had the reset raced our last read, the end of the stream).
                    try
                    {
                        Assert.Equal(0, await client.ReceiveAsync(buffer).DefaultTimeout());
                    }
                    catch (SocketException ex)
                    {
                        Assert.Equal(SocketError.ConnectionReset, ex.SocketErrorCode);
                    }
                }
                else
                {
                    await client.SendAsync("again");
                    Assert.Equal(5, await client.ReceiveAsync(buffer));
                    Assert.Equal("again"u8.ToArray(), buffer[..5]);
                }
            }

            // The failed ring's listening socket is closed: every new connection lands on the other.
            for (int i = 0; i < 16; i++)
            {
                clients.Add(await ConnectAndEcho());
            }
        }
        finally
        {
            foreach (RawConnection client in clients)
            {
                client.Dispose();
            }
        }

        Assert.False(group.Rings[0].IsRunning);
        Assert.True(group.Rings[1].IsRunning);
        var failed = Assert.Single(logs.Entries, e => e.EventId.Name == "RingFailed");
        Assert.Equal(LogLevel.Error, failed.Level);
        await server.StopAsync().DefaultTimeout();
    }

    [Fact]
    public async Task AnEndpointWhoseEveryRingFailedReportsItInsteadOfWaiting()
    {
        var logs = new CapturingLoggerProvider();
        string path = Path.Combine(Path.GetTempPath(), $"iouring-{Guid.NewGuid():N}.sock");
        var acceptFailed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        logs.Logged += entry =>
        {
            if (entry.Message.Contains("no more connections are accepted", StringComparison.Ordinal))
            {
                acceptFailed.TrySetResult();
            }
        };
        using IHost host = TestHost.Build(
            web => web
                .UseKestrel(k => k.ListenUnixSocket(path, ConnectionMiddlewareTests.Echo))
                .UseIoUringTransport(o =>
                {
                    o.FallbackToSockets = false;
                    o.RingCount = 1;
                    o.KernelEventLoop = TransportSelector.KernelEventLoop;
                })
                .Configure(_ => { }),
            logs,
            LogLevel.Warning);
        await host.StartAsync(TestContext.Current.CancellationToken);
        IoUringServer.FactoryOf(host.Services).Group!.Rings[0].Post(new ThrowingWork(), 0);

        // Kestrel hears of it from AcceptAsync and logs it; nothing waits forever.
        await acceptFailed.Task.DefaultTimeout();
        await host.StopAsync(TestContext.Current.CancellationToken).DefaultTimeout();
        Assert.Single(logs.Entries, e => e.EventId.Name == "RingFailed");
    }

    /// <summary>Fault injection: work that throws on the ring thread, which no connection's handling catches.</summary>
    internal sealed class ThrowingWork : IRingWork
    {
        public void Execute(RingThread ring, int operation) => throw new InvalidOperationException("Injected ring failure.");

        public void Reject(int operation, Exception error)
        {
        }
    }

    [Fact]
    public async Task AStoppingRingServesItsOpenConnectionsUntilTheyClose()
    {
        await using IoUringServer server = await IoUringServer.StartAsync(o => o.RingCount = 1, ConnectionMiddlewareTests.Echo);
        int port = server.Port;
        RingThread ring = server.Group.Rings[0];

        using RawConnection connection = await RawConnection.ConnectAsync(port);
        ring.RequestStop();
        var buffer = new byte[4];
        for (int i = 0; i < 100; i++)
        {
            await connection.SendAsync("ping");
            Assert.Equal(4, await connection.ReceiveAsync(buffer).DefaultTimeout());
        }

        Assert.True(ring.IsRunning);
        connection.HalfClose();
        Assert.Equal(0, await connection.ReceiveAsync(buffer));
        await server.StopAsync();
        Assert.True(ring.WaitForExit(TestWait.Default));
    }
}
