using System;
using System.Linq;
using System.Net.Http;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// Faults provoked for real against the io_uring transport: a dry buffer ring, no descriptors left
/// for accept, an overflowing completion queue, peers resetting while sends (plain and zero-copy)
/// are in flight. Each test shows the fault happened, nothing was lost, and the server kept serving.
/// </summary>
public class FaultTests
{
    /// <summary>
    /// Eight receive buffers for one ring, 32 connections sending at once, and an application
    /// that yields between reads: the kernel finds the ring dry (ENOBUFS ends the multishot
    /// receives), the transport re-arms once buffers come back, and every byte arrives in order.
    /// </summary>
    [Fact]
    public async Task BufferRingRunningDryLosesNoByte()
    {
        await using IoUringServer server = await IoUringServer.StartAsync(
            o =>
            {
                o.RingCount = 1;
                o.ReceiveBufferCount = 8;
                o.ReceiveBufferSize = 1024;
            },
            listen => listen.Run(connection => ConnectionMiddlewareTests.EchoAsync(
                connection,
                afterEachRead: async () => await Task.Yield()))); // a slow application: other connections' data piles up meanwhile

        var exchanges = new Task<bool>[32];
        for (int i = 0; i < exchanges.Length; i++)
        {
            int seed = i;
            exchanges[i] = Task.Run(() => EchoExchangeAsync(server.Port, 192 * 1024, seed), TestContext.Current.CancellationToken);
        }

        Assert.All(await Task.WhenAll(exchanges).DefaultTimeout(times: 4), Assert.True);
        long shortages = server.Group.Rings.Sum(r => r.BufferShortages);
        Assert.True(shortages > 0, "the buffer ring never ran dry: the test did not provoke ENOBUFS");
        Assert.True(await EchoExchangeAsync(server.Port, 10_000, 99), "the server stopped serving after the shortage");
        TestContext.Current.SendDiagnosticMessage($"ENOBUFS shortages: {shortages}");
    }

    /// <summary>
    /// A completion queue of 64 entries (SubmissionQueueSize 8) and 200 connections with data
    /// waiting while the ring thread is held: its next io_uring_enter runs the deferred accepts all
    /// at once, far more completions than the CQ holds, so the kernel keeps the rest
    /// (IORING_FEAT_NODROP) and flags IORING_SQ_CQ_OVERFLOW. The test sees the flag, then checks
    /// that no accept and no byte went missing.
    /// </summary>
    [Fact]
    public async Task CompletionQueueOverflowLosesNoCompletion()
    {
        await using IoUringServer server = await IoUringServer.StartAsync(
            o =>
            {
                o.RingCount = 1;
                o.SubmissionQueueSize = 8;
            },
            ConnectionMiddlewareTests.Echo);
        RingThread ringThread = server.Group.Rings[0];
        Assert.Equal(64u, ringThread.Ring.CqEntries);

        const int Clients = 200;
        var hold = new HoldRing();
        ringThread.Post(hold, 0);
        await hold.Held.Task.DefaultTimeout();

        // While the ring thread is held (with DEFER_TASKRUN nothing completes without it), every
        // client connects and sends: the kernel finishes the handshakes into the listen backlog.
        var sent = new TaskCompletionSource[Clients];
        var exchanges = new Task<bool>[Clients];
        for (int i = 0; i < Clients; i++)
        {
            int seed = i;
            sent[i] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            TaskCompletionSource onSent = sent[i];
            exchanges[i] = Task.Run(() => EchoExchangeAsync(server.Port, 4096 + seed * 97, seed, onSent), TestContext.Current.CancellationToken);
        }

        await Task.WhenAll(sent.Select(s => s.Task)).DefaultTimeout(times: 2);
        hold.Release.Set();
        Assert.True(await hold.Overflowed.Task.DefaultTimeout(),
            "the CQ did not overflow: the test did not provoke the condition");

        Assert.All(await Task.WhenAll(exchanges).DefaultTimeout(times: 4), Assert.True);
        Assert.Equal(0u, ringThread.Ring.CqOverflowCount); // NODROP: the kernel never discarded a completion
        Assert.Equal(Clients, ringThread.ConnectionsAccepted);
    }

    /// <summary>
    /// Work that holds the ring thread until released, then enters the ring once (on the ring
    /// thread, so SINGLE_ISSUER holds) to run the deferred completions, and reports whether the
    /// kernel flagged a CQ overflow. The loop then carries on and must flush the overflow itself.
    /// </summary>
    private sealed class HoldRing : IRingWork
    {
        public TaskCompletionSource Held { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ManualResetEventSlim Release { get; } = new();

        public TaskCompletionSource<bool> Overflowed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Execute(RingThread ring, int operation)
        {
            Held.SetResult();
            Release.Wait(TestWait.Default * 2);
            int result = ring.Ring.Submit();
            Overflowed.SetResult(result >= 0 && ring.Ring.CqOverflowPending);
        }

        public void Reject(int operation, Exception error)
        {
            Held.TrySetException(error);
            Overflowed.TrySetException(error);
        }
    }

    /// <summary>
    /// Peers reset while the server is sending a large response, plain and zero-copy (where the
    /// reset lands between a send's result and its notification): only those connections end,
    /// the server keeps serving, every pool block comes home and every ring stops clean.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task PeerResetWhileSendInFlightReturnsEveryBlock(bool zeroCopy)
    {
        var chunk = new byte[256 * 1024];
        new Random(5).NextBytes(chunk);
        IoUringServer server = await IoUringServer.StartAsync(
            o =>
            {
                o.RingCount = 2;
                o.ZeroCopySendThreshold = zeroCopy ? 4096 : null;
            },
            listen => { },
            async context =>
            {
                for (int i = 0; i < 32; i++)
                {
                    await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
                }
            });
        RingGroup group = server.Group;
        PinnedBlockMemoryPool pool = group.MemoryPool;
        try
        {
            for (int round = 0; round < 3; round++)
            {
                var clients = new Task[100];
                for (int i = 0; i < clients.Length; i++)
                {
                    int readBeforeReset = i % 3 * 100_000; // 0, 100 KB, 200 KB of an 8 MiB response
                    clients[i] = Task.Run(async () =>
                    {
                        using RawConnection connection = await RawConnection.ConnectAsync(server.Port, socket => socket.ReceiveBufferSize = 16 * 1024);
                        await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                        var buffer = new byte[64 * 1024];
                        int read = 0;
                        while (read < readBeforeReset)
                        {
                            int n = await connection.ReceiveAsync(buffer);
                            Assert.True(n > 0);
                            read += n;
                        }

                        connection.Reset();
                    }, TestContext.Current.CancellationToken);
                }

                await Task.WhenAll(clients).DefaultTimeout(times: 2);
                using var client = new HttpClient();
                byte[] body = await client.GetByteArrayAsync($"http://127.0.0.1:{server.Port}/", TestContext.Current.CancellationToken);
                Assert.Equal(32 * chunk.Length, body.Length);
                Assert.True(body.AsSpan(0, chunk.Length).SequenceEqual(chunk));
            }

            if (zeroCopy)
            {
                Assert.True(group.Rings.Sum(r => r.ZeroCopySends) > 0, "no send went zero-copy");
            }
        }
        finally
        {
            await server.DisposeAsync();
        }

        Assert.All(group.Rings, r => Assert.False(r.IsRunning, $"ring {r.Index} did not stop: a connection was never closed"));
        Assert.Equal(0, pool.RentedBlocks);
        Assert.All(group.Rings, r => Assert.Equal(0, r.BuffersInUse));
    }

    /// <summary>
    /// The shared stress traffic (echo, half-close, client reset, server abort) on two rings with
    /// every limit tight at once: 16 receive buffers of 1 KiB (the ring runs dry), a 64-entry CQ
    /// (it overflows), zero-copy sends from 4 KiB (resets land while notifications are due).
    /// Every byte arrives in order, every block and buffer comes home, every ring stops clean.
    /// </summary>
    [Fact]
    public async Task StressWithEveryLimitTightLosesNothing()
    {
        IoUringServer server = await IoUringServer.StartAsync(
            o =>
            {
                o.RingCount = 2;
                o.ReceiveBufferCount = 16;
                o.ReceiveBufferSize = 1024;
                o.SubmissionQueueSize = 8;
                o.ZeroCopySendThreshold = 4096;
            },
            listen => listen.Run(StressTests.ServeAsync));
        RingGroup group = server.Group;
        try
        {
            await StressTests.RunAsync(server.Port, "io_uring, tight limits", seconds: 8);
            Assert.True(group.Rings.Sum(r => r.BufferShortages) > 0, "the buffer rings never ran dry");
            Assert.All(group.Rings, r => Assert.True(r.ConnectionsAccepted > 0, $"ring {r.Index} accepted nothing"));
        }
        finally
        {
            await server.DisposeAsync();
        }

        Assert.All(group.Rings, r => Assert.False(r.IsRunning, $"ring {r.Index} did not stop: {r.ActiveConnections} connections open, {r.BuffersInUse} provided buffers out"));
        Assert.Equal(0, group.MemoryPool.RentedBlocks);
        Assert.All(group.Rings, r => Assert.Equal(0, r.BuffersInUse));
    }

    /// <summary>Sends <paramref name="size"/> random bytes, half-closes, and checks the echo is the same bytes in order.</summary>
    internal static async Task<bool> EchoExchangeAsync(int port, int size, int seed, TaskCompletionSource? sent = null)
    {
        using RawConnection connection = await RawConnection.ConnectAsync(port);
        var payload = new byte[size];
        new Random(seed).NextBytes(payload);
        Task<byte[]> echo = connection.ReadToEndAsync();
        for (int offset = 0; offset < size; offset += 16 * 1024)
        {
            await connection.SendAsync(payload.AsMemory(offset, Math.Min(16 * 1024, size - offset)));
        }

        connection.HalfClose();
        sent?.SetResult();
        return (await echo).AsSpan().SequenceEqual(payload);
    }
}
