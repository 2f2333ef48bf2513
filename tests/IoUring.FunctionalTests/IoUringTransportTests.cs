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
using IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using IoUring.Sockets;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Behaviour only the io_uring transport has: it really runs, its memory comes home, its switches work.</summary>
/// <remarks>Alone in its collection: it counts the process's descriptors and threads, which other tests change.</remarks>
[Collection(nameof(IoUringTransportTests))]
public class IoUringTransportTests
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
    public async Task EveryPoolBlockComesHomeAndEveryDescriptorIsClosed()
    {
        static Task<TestServer> Start() => TestServer.StartAsync(app => app.Run(async context =>
        {
            using var body = new MemoryStream();
            await context.Request.Body.CopyToAsync(body);
            await context.Response.Body.WriteAsync(new byte[body.Length + 100_000]);
        }));

        // Warm up: the runtime opens descriptors of its own (its socket engine's epoll) on first use.
        await using (TestServer warmUp = await Start())
        {
            using HttpClient client = warmUp.CreateClient();
            using var content = new ByteArrayContent(new byte[10]);
            (await client.PostAsync("/", content, TestContext.Current.CancellationToken)).Dispose();
        }

        int descriptorsBefore = TransportDescriptors().Count;
        TestServer server = await Start();
        RingGroup group = IoUringServer.FactoryOf(server.Services).Group!;
        PinnedBlockMemoryPool pool = group.MemoryPool;
        Assert.All(group.Rings, r => Assert.True(r.IsRunning));
        using (HttpClient client = server.CreateClient())
        {
            var tasks = new List<Task>();
            for (int i = 0; i < 40; i++)
            {
                tasks.Add(Task.Run(async () =>
                {
                    using var content = new ByteArrayContent(new byte[300_000]);
                    using HttpResponseMessage response = await client.PostAsync("/", content, TestContext.Current.CancellationToken);
                    Assert.Equal(400_000, (await response.Content.ReadAsByteArrayAsync(TestContext.Current.CancellationToken)).Length);
                }, TestContext.Current.CancellationToken));
            }

            await Task.WhenAll(tasks);
            Assert.True(pool.AllocatedBlocks > 0, "the connections' pipes draw on the transport's pool");
        }

        await server.DisposeAsync();
        Assert.Equal(0, pool.RentedBlocks);
        Assert.All(group.Rings, r => Assert.False(r.IsRunning));
        List<string> descriptors = TransportDescriptors();
        Assert.True(descriptorsBefore == descriptors.Count, $"{descriptors.Count - descriptorsBefore} descriptors left open: " +
            string.Join(", ", descriptors.GroupBy(t => t).Select(g => $"{g.Key} x{g.Count()}")));
    }

    [Fact]
    public async Task ZeroCopySendsDeliverLargeResponsesIntact()
    {
        const int Size = 8 * 1024 * 1024;
        byte[] expected = new byte[Size];
        new Random(11).NextBytes(expected);
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => o.ZeroCopySendThreshold = 16 * 1024,
            app: async context =>
            {
                for (int offset = 0; offset < Size; offset += 256 * 1024)
                {
                    await context.Response.Body.WriteAsync(expected.AsMemory(offset, 256 * 1024));
                }
            });
        int port = server.Port;
        using var client = new HttpClient();
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(expected, await client.GetByteArrayAsync($"http://127.0.0.1:{port}/", TestContext.Current.CancellationToken));
        }

        Assert.True(server.Group.Rings.Sum(r => r.ZeroCopySends) > 0, "no send went zero-copy");
    }

    /// <summary>
    /// Output written in pieces of 3,000 bytes, every send taken only in part by the kernel (the
    /// ring's short-send fault injection: what a full socket does now and then), so each continues
    /// where it stopped; with zero copy each part also waits for its notification. With a write
    /// buffer of one byte each write waits for its send, so every send is one pool block (a plain
    /// send, no iovecs); with the default, writes run ahead and sends gather several (a sendmsg).
    /// Every byte arrives in order and every block comes home.
    /// </summary>
    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 1)]
    [InlineData(false, 64 * 1024)]
    [InlineData(true, 64 * 1024)]
    public async Task SendsTakenInPartsDeliverEveryByteInOrder(bool zeroCopy, long maxWriteBufferSize)
    {
        const int Size = 1024 * 1024;
        const int Write = 3000;
        byte[] expected = new byte[Size];
        new Random(12).NextBytes(expected);
        IoUringServer server = await IoUringServer.StartAsync(
            o =>
            {
                o.RingCount = 1;
                o.ZeroCopySendThreshold = zeroCopy ? 1 : null;
                o.MaxWriteBufferSize = maxWriteBufferSize;
            },
            listen => listen.Run(async connection =>
            {
                for (int offset = 0; offset < Size; offset += Write)
                {
                    await connection.Transport.Output.WriteAsync(expected.AsMemory(offset, Math.Min(Write, Size - offset)));
                }
            }));
        RingGroup group = server.Group;
        RingThread ring = Assert.Single(group.Rings);
        TransportTestHooks hooks = IoUringServer.HooksOf(server.Services);
        hooks.ShortSends = true;
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(IPAddress.Loopback, server.Port, TestContext.Current.CancellationToken);
            byte[] received = await ConnectionMiddlewareTests.ReadAllAsync(socket);
            Assert.Equal(Size, received.Length);
            Assert.True(expected.AsSpan().SequenceEqual(received), "the bytes arrived changed or out of order");
            Assert.True(ring.PartialSends > 0, "no send went out in parts");
            Assert.Equal(zeroCopy, ring.ZeroCopySends > 0);
        }
        finally
        {
            hooks.ShortSends = false;
            await server.DisposeAsync();
        }

        Assert.Equal(0, group.MemoryPool.RentedBlocks);
    }

    /// <summary>One ring with 16 receive buffers of 4 KiB: few enough for a handful of connections to run it short.</summary>
    private static void OneRingOfSixteenBuffers(IoUringTransportOptions o)
    {
        o.RingCount = 1;
        o.ReceiveBufferCount = 16;
        o.ReceiveBufferSize = 4096;
    }

    /// <summary>
    /// A ring with only 16 receive buffers, eight connections whose application reads nothing, and
    /// fast connections beside them: the stalled ones must not keep the ring's buffers (their data
    /// is copied out once buffers run short), the fast ones are served, and every byte of all of
    /// them arrives in order.
    /// </summary>
    [Fact]
    public async Task StalledReadersCannotDrainTheRingsBuffers()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using IoUringServer server = await IoUringServer.StartAsync(
            OneRingOfSixteenBuffers,
            listen => listen.Run(async connection =>
                {
                    var input = connection.Transport.Input;
                    var first = await input.ReadAsync();
                    bool stall = first.Buffer.FirstSpan[0] == (byte)'S';
                    input.AdvanceTo(first.Buffer.Start);
                    if (stall)
                    {
                        await release.Task;
                    }

                    // Echo everything back, then close.
                    while (true)
                    {
                        var result = await input.ReadAsync();
                        foreach (ReadOnlyMemory<byte> segment in result.Buffer)
                        {
                            await connection.Transport.Output.WriteAsync(segment);
                        }

                        input.AdvanceTo(result.Buffer.End);
                        if (result.IsCompleted)
                        {
                            break;
                        }
                    }
                }));
        int port = server.Port;

        async Task<bool> Exchange(byte tag, int size, Task? before)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(IPAddress.Loopback, port);
            var payload = new byte[size];
            new Random(size + tag).NextBytes(payload);
            payload[0] = tag;
            Task<byte[]> echo = ConnectionMiddlewareTests.ReadAllAsync(socket);
            await socket.SendAsync(payload, SocketFlags.None);
            if (before is not null)
            {
                await before;
            }

            socket.Shutdown(SocketShutdown.Send);
            return (await echo).AsSpan().SequenceEqual(payload);
        }

        var stalled = new Task<bool>[8];
        for (int i = 0; i < stalled.Length; i++)
        {
            stalled[i] = Task.Run(() => Exchange((byte)'S', 128 * 1024, release.Task), TestContext.Current.CancellationToken);
        }

        var fast = new Task<bool>[16];
        for (int i = 0; i < fast.Length; i++)
        {
            fast[i] = Task.Run(() => Exchange((byte)'F', 256 * 1024, null), TestContext.Current.CancellationToken);
        }

        Assert.All(await Task.WhenAll(fast).WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken), Assert.True);
        release.SetResult();
        Assert.All(await Task.WhenAll(stalled).WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken), Assert.True);
    }

    [Fact]
    public async Task AbortWhileTheRingIsShortOfBuffersEndsEveryConnection()
    {
        const int Connections = 32;
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int inputsEnded = 0;
        var allEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using IoUringServer server = await IoUringServer.StartAsync(
            OneRingOfSixteenBuffers,
            listen => listen.Run(async connection =>
                {
                    // Hold what arrived (so the ring's few buffers run out), then abort.
                    ReadResult first = await connection.Transport.Input.ReadAsync();
                    connection.Transport.Input.AdvanceTo(first.Buffer.Start);
                    await gate.Task;
                    connection.Abort();
                    try
                    {
                        while (true)
                        {
                            ReadResult read = await connection.Transport.Input.ReadAsync();
                            connection.Transport.Input.AdvanceTo(read.Buffer.End); // a PipeReader must be advanced before the next read
                            if (read.IsCompleted)
                            {
                                break;
                            }
                        }
                    }
                    catch (ConnectionAbortedException)
                    {
                    }

                    if (Interlocked.Increment(ref inputsEnded) == Connections)
                    {
                        allEnded.TrySetResult();
                    }
                }));
        int port = server.Port;
        RingThread ring = server.Group.Rings[0];

        var sockets = new List<Socket>();
        try
        {
            var payload = new byte[256 * 1024];
            for (int i = 0; i < Connections; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(socket);
                await socket.ConnectAsync(IPAddress.Loopback, port, TestContext.Current.CancellationToken);
                _ = socket.SendAsync(payload, SocketFlags.None).ContinueWith(t => t.Exception, TaskScheduler.Default); // ends with a reset
            }

            // No event tells us the ring ran dry; watch its shortage count.
            await TestWait.UntilAsync(() => ring.BufferShortages > 0, () => "the ring never ran short of buffers");

            gate.SetResult();
            await allEnded.Task.DefaultTimeout();
        }
        finally
        {
            foreach (Socket socket in sockets)
            {
                socket.Dispose();
            }
        }

        await server.StopAsync();
        Assert.Equal(0, ring.ActiveConnections);
        Assert.Equal(0, ring.BuffersInUse);
    }

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

        async Task<Socket> ConnectAndEcho()
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(IPAddress.Loopback, port, TestContext.Current.CancellationToken);
            await socket.SendAsync("hello"u8.ToArray(), SocketFlags.None, TestContext.Current.CancellationToken);
            var buffer = new byte[5];
            Assert.Equal(5, await socket.ReceiveAsync(buffer, SocketFlags.None, TestContext.Current.CancellationToken));
            return socket;
        }

        // Open connections until both rings hold some (the kernel's reuseport hash decides).
        var clients = new List<Socket>();
        try
        {
            while (clients.Count < 8 || ringOfClientPort.Values.Distinct().Count() < 2)
            {
                Assert.True(clients.Count < 200, "the kernel never spread connections over both rings");
                clients.Add(await ConnectAndEcho());
            }

            group.Rings[0].Post(new ThrowingWork(), 0);

            foreach (Socket client in clients)
            {
                int ring = ringOfClientPort[((IPEndPoint)client.LocalEndPoint!).Port];
                var buffer = new byte[16];
                if (ring == 0)
                {
                    // Aborted: a reset (or, had the reset raced our last read, the end of the stream).
                    try
                    {
                        Assert.Equal(0, await client.ReceiveAsync(buffer, SocketFlags.None, TestContext.Current.CancellationToken).AsTask().DefaultTimeout());
                    }
                    catch (SocketException ex)
                    {
                        Assert.Equal(SocketError.ConnectionReset, ex.SocketErrorCode);
                    }
                }
                else
                {
                    await client.SendAsync("again"u8.ToArray(), SocketFlags.None, TestContext.Current.CancellationToken);
                    Assert.Equal(5, await client.ReceiveAsync(buffer, SocketFlags.None, TestContext.Current.CancellationToken));
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
            foreach (Socket client in clients)
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
    public async Task ASendTheRingCannotSubmitEndsThatConnectionOnly()
    {
        var appDone = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await TestServer.StartAsync(
            app => app.Run(async context =>
            {
                if (context.Request.Path != "/big")
                {
                    await context.Response.WriteAsync("ok");
                    return;
                }

                try
                {
                    var chunk = new byte[64 * 1024];
                    for (int i = 0; i < 256; i++)
                    {
                        await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
                    }

                    appDone.TrySetResult(null);
                }
                catch (Exception ex)
                {
                    appDone.TrySetResult(ex);
                }
            }));
        RingGroup group = IoUringServer.FactoryOf(server.Services).Group!;
        TransportTestHooks hooks = IoUringServer.HooksOf(server.Services);

        using (var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await socket.ConnectAsync(IPAddress.Loopback, server.Port, TestContext.Current.CancellationToken);
            await socket.SendAsync("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(), SocketFlags.None, TestContext.Current.CancellationToken);
            var buffer = new byte[64 * 1024];
            Assert.True(await socket.ReceiveAsync(buffer, SocketFlags.None, TestContext.Current.CancellationToken) > 0);

            // The response is far larger than the socket buffers: sends are still to come. Make them fail.
            hooks.FailSendSubmissions = true;

            long received = 0;
            try
            {
                int n;
                while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, TestContext.Current.CancellationToken).AsTask().DefaultTimeout()) > 0)
                {
                    received += n;
                }
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
            {
            }

            Assert.True(received < 256 * 64 * 1024, "the whole response arrived although its sends failed");
        }

        // The application's writes ended (Kestrel drops or fails writes to an aborted connection)
        // instead of waiting forever on a send that will never complete, and the server serves on.
        await appDone.Task.DefaultTimeout();
        hooks.FailSendSubmissions = false;
        foreach (RingThread ring in group.Rings)
        {
            Assert.True(ring.IsRunning);
        }

        using (HttpClient client = server.CreateClient())
        {
            Assert.Equal("ok", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
        }

        await server.DisposeAsync();
        Assert.Equal(0, group.MemoryPool.RentedBlocks);
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
        using IHost host = new HostBuilder()
            .ConfigureLogging(l => l.ClearProviders().AddProvider(logs).SetMinimumLevel(LogLevel.Warning))
            .ConfigureWebHost(web => web
                .UseKestrel(k => k.ListenUnixSocket(path, ConnectionMiddlewareTests.Echo))
                .UseIoUringTransport(o =>
                {
                    o.FallbackToSockets = false;
                    o.RingCount = 1;
                })
                .Configure(_ => { }))
            .Build();
        await host.StartAsync(TestContext.Current.CancellationToken);
        IoUringServer.FactoryOf(host.Services).Group!.Rings[0].Post(new ThrowingWork(), 0);

        // Kestrel hears of it from AcceptAsync and logs it; nothing waits forever.
        await acceptFailed.Task.DefaultTimeout();
        await host.StopAsync(TestContext.Current.CancellationToken).DefaultTimeout();
        Assert.Single(logs.Entries, e => e.EventId.Name == "RingFailed");
    }

    [Fact]
    public async Task FinAndResetAreLoggedWithTheirReasonAtDebug()
    {
        var logs = new CapturingLoggerProvider();
        var ends = new System.Collections.Concurrent.ConcurrentDictionary<string, TaskCompletionSource>();
        logs.Logged += entry =>
        {
            if (entry.EventId.Name is "ConnectionWriteFin" or "ConnectionWriteRst")
            {
                ends.GetOrAdd(entry.EventId.Name, _ => new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
            }
        };
        await using IoUringServer server = await IoUringServer.StartAsync(
            _ => { },
            listen => listen.Run(async connection =>
                {
                    ReadResult result = await connection.Transport.Input.ReadAsync();
                    bool abort = result.Buffer.FirstSpan[0] == (byte)'a';
                    connection.Transport.Input.AdvanceTo(result.Buffer.End);
                    if (abort)
                    {
                        connection.Abort(new ConnectionAbortedException("test abort"));
                    }
                }),
            logs: logs,
            minimumLevel: LogLevel.Debug);
        int port = server.Port;
        foreach ((string first, string eventName) in new[] { ("a", "ConnectionWriteRst"), ("f", "ConnectionWriteFin") })
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(IPAddress.Loopback, port, TestContext.Current.CancellationToken);
            await socket.SendAsync(System.Text.Encoding.ASCII.GetBytes(first), SocketFlags.None, TestContext.Current.CancellationToken);
            await ends.GetOrAdd(eventName, _ => new(TaskCreationOptions.RunContinuationsAsynchronously)).Task.DefaultTimeout();
        }

        var rst = Assert.Single(logs.Entries, e => e.EventId.Name == "ConnectionWriteRst");
        Assert.Equal(LogLevel.Debug, rst.Level);
        Assert.Contains("test abort", rst.Message, StringComparison.Ordinal);
        Assert.Equal(LogLevel.Debug, Assert.Single(logs.Entries, e => e.EventId.Name == "ConnectionWriteFin").Level);
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
        using (var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await socket.ConnectAsync(IPAddress.Loopback, port, TestContext.Current.CancellationToken);
            await reading.Task.DefaultTimeout();
            await socket.SendAsync("x"u8.ToArray(), SocketFlags.None, TestContext.Current.CancellationToken);
            Assert.StartsWith("io_uring ring", await threadName.Task.DefaultTimeout(), StringComparison.Ordinal);
        }
    }

    /// <summary>Fault injection: work that throws on the ring thread, which no connection's handling catches.</summary>
    private sealed class ThrowingWork : IRingWork
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

        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port, TestContext.Current.CancellationToken);
        ring.RequestStop();
        var buffer = new byte[4];
        for (int i = 0; i < 100; i++)
        {
            await socket.SendAsync("ping"u8.ToArray(), SocketFlags.None, TestContext.Current.CancellationToken);
            Assert.Equal(4, await socket.ReceiveAsync(buffer, SocketFlags.None, TestContext.Current.CancellationToken).AsTask().DefaultTimeout());
        }

        Assert.True(ring.IsRunning);
        socket.Shutdown(SocketShutdown.Send);
        Assert.Equal(0, await socket.ReceiveAsync(buffer, SocketFlags.None, TestContext.Current.CancellationToken));
        await server.StopAsync();
        Assert.True(ring.WaitForExit(TestWait.Default));
    }

    [Fact]
    public async Task MetricsReportConnectionsBytesAndRingActivityPerRing()
    {
        var values = new System.Collections.Concurrent.ConcurrentDictionary<(string Name, int Ring), long>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "IoUring.Transport")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "ring")
                {
                    values[(instrument.Name, (int)tag.Value!)] = value;
                }
            }
        });
        listener.Start();

        var openConnections = new List<Socket>();
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            context.Response.ContentLength = 1000;
            await context.Response.Body.WriteAsync(new byte[1000]);
        }));
        try
        {
            for (int i = 0; i < 10; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                openConnections.Add(socket);
                await socket.ConnectAsync(IPAddress.Loopback, server.Port, TestContext.Current.CancellationToken);
                await socket.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(), SocketFlags.None, TestContext.Current.CancellationToken);
                // Read the whole response (headers, then a 1000-byte body); the connection stays open.
                var response = new List<byte>();
                var buffer = new byte[4096];
                int headerEnd;
                while ((headerEnd = IndexOfHeaderEnd(response)) < 0 || response.Count < headerEnd + 1000)
                {
                    int n = await socket.ReceiveAsync(buffer, SocketFlags.None, TestContext.Current.CancellationToken);
                    Assert.True(n > 0);
                    response.AddRange(buffer.AsSpan(0, n).ToArray());
                }
            }

            listener.RecordObservableInstruments();
            int rings = IoUringServer.FactoryOf(server.Services).Group!.Rings.Length;
            long Sum(string name) => Enumerable.Range(0, rings).Sum(r => values.GetValueOrDefault((name, r)));
            Assert.Equal(10, Sum("iouring.connections.active"));
            Assert.Equal(10, Sum("iouring.connections.accepted"));
            Assert.True(Sum("iouring.bytes.received") >= 10 * "GET / HTTP/1.1\r\nHost: x\r\n\r\n".Length);
            Assert.True(Sum("iouring.bytes.sent") >= 10 * 1000);
            Assert.True(Sum("iouring.enters") > 0);
            Assert.True(Sum("iouring.submissions") > 0);
            Assert.True(Sum("iouring.completions") >= Sum("iouring.connections.accepted"));
            Assert.True(values.ContainsKey(("iouring.buffers.in_use", 0)));
            Assert.True(values.ContainsKey(("iouring.buffers.exhausted", 0)));
        }
        finally
        {
            foreach (Socket socket in openConnections)
            {
                socket.Dispose();
            }
        }
    }

    private static int IndexOfHeaderEnd(List<byte> data)
    {
        int i = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(data).IndexOf("\r\n\r\n"u8);
        return i < 0 ? -1 : i + 4;
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
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(IPAddress.Loopback, server.Port, TestContext.Current.CancellationToken);
            await socket.SendAsync("x"u8.ToArray(), SocketFlags.None, TestContext.Current.CancellationToken);
            var ex = await Assert.ThrowsAsync<SocketException>(async () => await socket.ReceiveAsync(new byte[16], SocketFlags.None, TestContext.Current.CancellationToken));
            Assert.Equal(SocketError.ConnectionReset, ex.SocketErrorCode);
        }));
    }

    [Fact]
    public async Task ClientResetsAreNotLoggedAsErrors()
    {
        var logs = new CapturingLoggerProvider();
        await using var server = await TestServer.StartAsync(
            app => app.Run(async context =>
            {
                var chunk = new byte[64 * 1024];
                for (int i = 0; i < 64; i++)
                {
                    await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
                }
            }),
            configureServices: services => services.AddSingleton<ILoggerProvider>(logs));
        await Task.WhenAll(Enumerable.Range(0, 50).Select(async _ =>
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(IPAddress.Loopback, server.Port, TestContext.Current.CancellationToken);
            await socket.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(), SocketFlags.None, TestContext.Current.CancellationToken);
            await socket.ReceiveAsync(new byte[1000], SocketFlags.None, TestContext.Current.CancellationToken);
            socket.LingerState = new LingerOption(true, 0); // close sends RST mid-response
        }));

        using (HttpClient client = server.CreateClient())
        {
            // Still serving; and by now every reset connection has ended on the server.
            Assert.Equal(64 * 64 * 1024, (await client.GetByteArrayAsync("/", TestContext.Current.CancellationToken)).Length);
        }

        await server.DisposeAsync();
        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Error);
    }

    [Fact]
    public async Task DisabledFromConfigurationServesOnSockets()
    {
        string? connectionType = null;
        using IHost host = new HostBuilder()
            .ConfigureAppConfiguration(c => c.AddInMemoryCollection(new Dictionary<string, string?> { ["IoUring:Enabled"] = "false" }))
            .ConfigureWebHost(web => web
                .UseKestrel(k => k.Listen(IPAddress.Loopback, 0, listen => listen.Use(next => connection =>
                {
                    connectionType = connection.GetType().Name;
                    return next(connection);
                })))
                .UseIoUringTransport()
                .Configure(app => app.Run(context => context.Response.WriteAsync("sockets"))))
            .Build();
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
        using IHost host = new HostBuilder()
            .ConfigureWebHost(web => web
                .UseKestrel(k => k.Listen(IPAddress.Loopback, 0))
                .UseIoUringTransport(o => o.ReceiveBufferCount = 1000)
                .Configure(app => app.Run(context => context.Response.WriteAsync("x"))))
            .Build();
        var ex = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => host.StartAsync(TestContext.Current.CancellationToken));
        Assert.Contains("ReceiveBufferCount must be a power of two", ex.Message, StringComparison.Ordinal);
    }

    private static IHost BuildHost(CapturingLoggerProvider logs, bool fallback, int listeners)
        => new HostBuilder()
            .ConfigureLogging(l => l.ClearProviders().AddProvider(logs).SetMinimumLevel(LogLevel.Debug))
            .ConfigureWebHost(web => web
                .UseKestrel(k =>
                {
                    for (int i = 0; i < listeners; i++)
                    {
                        k.Listen(IPAddress.Loopback, 0);
                    }
                })
                .UseIoUringTransport(o => o.FallbackToSockets = fallback)
                .Configure(app => app.Run(context => context.Response.WriteAsync("x"))))
            .Build();

    /// <summary>The kinds of descriptor the transport opens: sockets, rings ([io_uring]) and eventfds (the runtime maps assemblies lazily, so files are left out).</summary>
    private static List<string> TransportDescriptors()
    {
        var targets = new List<string>();
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                string? target = new FileInfo(fd).LinkTarget;
                if (target is not null && (target.StartsWith("socket:", StringComparison.Ordinal) || target.StartsWith("anon_inode:", StringComparison.Ordinal)))
                {
                    targets.Add(target.StartsWith("socket:", StringComparison.Ordinal) ? "socket" : target);
                }
            }
            catch (IOException)
            {
                // closed while we looked
            }
        }

        return targets;
    }
}

[CollectionDefinition(nameof(IoUringTransportTests), DisableParallelization = true)]
public sealed class IoUringTransportTestsCollection
{
}
