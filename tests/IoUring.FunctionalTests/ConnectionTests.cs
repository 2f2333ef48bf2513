using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Pipelines;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using IoUring.Sockets;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Connections on io_uring: they run on the rings, every ring's socket has the backlog, inline scheduling runs the application on the ring thread, an abort resets.</summary>
[Collection(IsolatedCollection.Name)]
public class ConnectionTests
{
    [Fact]
    public async Task ConnectionsRunOnIoUringRings()
    {
        string? connectionType = null;
        await using var server = await TestServer.StartAsync(app => app.Run(context => context.Response.WriteAsync("ok")), kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen =>
        {
            listen.Use(next => connection =>
            {
                connectionType = connection.GetType().Name;
                return next(connection);
            });
        }));
        using HttpClient client = server.CreateClient();
        Assert.Equal("ok", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
        Assert.Equal("IoUringConnection", connectionType);
        Assert.True(IoUringServer.FactoryOf(server.Services).IsUsingIoUring);
    }

    [Fact]
    public async Task BacklogIsTheListenQueueOfEveryRingsSocket()
    {
        await using IoUringServer server = await IoUringServer.StartAsync(
            o =>
            {
                o.RingCount = 2;
                o.Backlog = 123;
            },
            app: context => context.Response.WriteAsync("x"));
        int port = server.Port;

        // The kernel reports a listening socket's accept queue limit as tcpi_sacked in TCP_INFO
        // (tcp_get_info in net/ipv4/tcp.c); offset 28 of struct tcp_info.
        var backlogs = new List<int>();
        foreach (string path in Directory.GetFiles("/proc/self/fd"))
        {
            if (!int.TryParse(Path.GetFileName(path), out int fd) || new FileInfo(path).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) != true)
            {
                continue;
            }

            try
            {
                if (LinuxSocket.IsListening(fd) && LinuxSocket.GetLocalEndPoint(fd) is IPEndPoint local && local.Port == port)
                {
                    backlogs.Add(ReadListenQueueLimit(fd));
                }
            }
            catch (SocketException)
            {
                // closed while we looked, or not a socket these calls understand
            }
        }

        Assert.Equal([123, 123], backlogs);
    }

    private static unsafe int ReadListenQueueLimit(int fd)
    {
        byte* info = stackalloc byte[104];
        int length = 104;
        Assert.Equal(0, IoUring.Sockets.SocketInterop.GetSockOpt(fd, 6 /* IPPROTO_TCP */, 11 /* TCP_INFO */, info, &length));
        return *(int*)(info + 28);
    }

    [Fact]
    public async Task InlineSchedulingRunsTheApplicationOnTheRingThread()
    {
        var threadName = new TaskCompletionSource<string?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var reading = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => o.UnsafePreferInlineScheduling = true,
            listen => listen.Run(async connection =>
                {
                    // The handler starts on the thread pool; a read that completes later resumes on
                    // the thread that completed it: the ring's, when scheduling is inline. The
                    // continuation is registered before the client may send, so it cannot find the
                    // read already complete and run here instead.
#pragma warning disable CA2012 // consumed once, through its awaiter, to register the continuation explicitly
                    ValueTaskAwaiter<ReadResult> read = connection.Transport.Input.ReadAsync().GetAwaiter();
#pragma warning restore CA2012
                    if (read.IsCompleted)
                    {
                        threadName.TrySetResult("(completed before any data was sent)");
                        return;
                    }

                    read.OnCompleted(() =>
                    {
                        read.GetResult();
                        threadName.TrySetResult(Thread.CurrentThread.Name);
                    });
                    reading.TrySetResult();
                    await threadName.Task;
                }));
        int port = server.Port;
        using (RawConnection connection = await RawConnection.ConnectAsync(port))
        {
            await reading.Task.DefaultTimeout();
            await connection.SendAsync("x");
            Assert.StartsWith("io_uring ring", await threadName.Task.DefaultTimeout(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task AbortResetsTheConnection()
    {
        // Many at once: the send loop, woken by the abort, must never get to end the connection
        // gracefully (FIN) before the abort's reset is decided.
        await using var server = await TestServer.StartAsync(_ => { }, kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Run(async connection =>
        {
            await connection.Transport.Input.ReadAsync();
            connection.Abort();
        })));
        await Task.WhenAll(Enumerable.Range(0, 200).Select(async _ =>
        {
            using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
            await connection.SendAsync("x");
            var ex = await Assert.ThrowsAsync<SocketException>(() => connection.ReceiveAsync(new byte[16]));
            Assert.Equal(SocketError.ConnectionReset, ex.SocketErrorCode);
        }));
    }

}

/// <summary>
/// Tests that must not run beside others: they count the process's descriptors and threads, or
/// change process-wide state. They run alone, after the parallel ones.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class IsolatedCollection
{
    public const string Name = "Isolated";
}
