using System;
using System.Collections.Generic;
using System.IO.Pipelines;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// Completions the kernel event loop holds in the kernel for a later return (bpf/event_loop.bpf.c):
/// a send that completed in full and whose connection has nothing more to send waits in the CQ
/// until a completion user space needs now ends the kernel's sleep, or until
/// <see cref="HoldMax"/> completions are ready; a connection whose held send is followed by more
/// output goes on at once. On Linux 7.2 (the 7.2 legs of scripts/test-kernels.sh); skipped where
/// the kernel has no io_uring BPF event loop, as the other kernel loop tests.
/// </summary>
[Collection(IsolatedCollection.Name)]
public class KernelEventLoopDeferralTests
{
    private const string NeedsTheLoop = KernelEventLoopTests.NeedsTheLoop;

    /// <summary>The bound the tests give the program (RingKernelLoop.HoldMax): small, so that a test reaches it with a few connections.</summary>
    private const int HoldMax = 8;

    private static readonly bool s_kernelHasLoop = IoUringTransportFactory.IsIoUringBpfLoopAvailable;

    [Fact]
    public async Task SendsThatCompletedInFullWaitInTheKernelUntilACompletionThatCannotWait()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        await using var sends = await OneSendEach.StartAsync(HoldMax - 1);
        long sentBefore = sends.Ring.BytesSent;
        long deferredBefore = sends.Ring.KernelEventLoopDeferredNow;

        await sends.SendAllInOneTurnAsync();

        // Every client has its byte: the kernel sent them. The program held the completions (it
        // counts them before it sleeps), and with nothing else happening on the ring they stay in
        // the CQ: the ring thread, asleep in the kernel, has not counted the bytes.
        await TestWait.UntilAsync(
            () => sends.Ring.KernelEventLoopDeferredNow - deferredBefore >= sends.Count,
            () => $"the program held {sends.Ring.KernelEventLoopDeferredNow - deferredBefore} of {sends.Count} completed sends");
        Assert.Equal(sentBefore, sends.Ring.BytesSent);
        long completionsBefore = sends.Ring.Completions;

        // A post from another thread: its wake is a completion that cannot wait, and the one
        // return carries the held sends with it.
        long entersBefore = sends.Ring.Enters;
        sends.Ring.Post(new NoWork(), 0);
        await TestWait.UntilAsync(
            () => sends.Ring.BytesSent - sentBefore == sends.Count,
            () => $"after the wake the ring counted {sends.Ring.BytesSent - sentBefore} of {sends.Count} bytes sent");
        Assert.True(sends.Ring.Completions - completionsBefore >= sends.Count + 1, "the held sends and the wake came back");
        Assert.True(sends.Ring.KernelEventLoopDeferred - deferredBefore >= sends.Count, "the copied counter says so too");
        Assert.InRange(sends.Ring.Enters - entersBefore, 1, 3); // the return, a submit of the re-armed wake read, the next sleep
    }

    [Fact]
    public async Task HeldCompletionsComeBackOnTheirOwnOnceTheBoundIsReady()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        await using var sends = await OneSendEach.StartAsync(HoldMax);
        long sentBefore = sends.Ring.BytesSent;

        await sends.SendAllInOneTurnAsync();

        // HoldMax completions that could all wait, and nothing else on the ring: the program
        // returns for them anyway, and the ring thread counts every byte without any wake.
        await TestWait.UntilAsync(
            () => sends.Ring.BytesSent - sentBefore == sends.Count,
            () => $"with {sends.Count} completions ready (the bound) the ring counted {sends.Ring.BytesSent - sentBefore} bytes sent");
    }

    [Fact]
    public async Task AConnectionWritingAgainWhileItsLastSendIsHeldDoesNotStall()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        const int Chunks = 20;
        const int ChunkSize = 100;
        var rings = new TaskCompletionSource<RingThread>(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 1; o.TestHooks = new TransportTestHooks { KernelEventLoopHoldMax = HoldMax }; },
            listen => listen.Run(connection => WriteEachOnceTheLastIsHeldAsync(connection, rings.Task, Chunks, ChunkSize, held)));
        RingThread ring = server.Group.Rings[0];
        rings.SetResult(ring);
        Assert.True(ring.HoldsSendCompletions);

        using RawConnection client = await RawConnection.ConnectAsync(server.Port);
        byte[] received = await client.ReadToEndAsync().DefaultTimeout();
        Assert.Equal(Chunks * ChunkSize, received.Length);
        for (int i = 0; i < Chunks; i++)
        {
            Assert.True(received.AsSpan(i * ChunkSize, ChunkSize).IndexOfAnyExcept((byte)('a' + i)) < 0, $"chunk {i} arrived wrong");
        }

        Assert.True(await held.Task.DefaultTimeout() > 0, "no chunk's send was held: the test did not test holding");
    }

    [Fact]
    public async Task AConnectionFlushingInATightLoopOnAnIdleRingDoesNotStall()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        const int MinFlushes = 2000;
        const int MaxFlushes = 200_000;
        var flushed = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var rings = new TaskCompletionSource<RingThread>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 1; },
            listen => listen.Run(connection => FlushEightBytesAtATimeAsync(connection, rings.Task, MinFlushes, MaxFlushes, flushed)));
        RingThread ring = server.Group.Rings[0];
        long deferredBefore = ring.KernelEventLoopDeferredNow;
        rings.SetResult(ring);

        // Writes racing the send loop's reads and the ring's sleeps, some of them while a send is
        // held: every byte and the FIN arrive.
        using RawConnection client = await RawConnection.ConnectAsync(server.Port);
        byte[] received = await client.ReadToEndAsync().DefaultTimeout();
        int flushes = await flushed.Task.DefaultTimeout();
        Assert.Equal(flushes * 8, received.Length);
        Assert.True(ring.KernelEventLoopDeferredNow > deferredBefore, $"no send was held in {flushes} flushes: the test did not test holding");
    }

    [Fact]
    public async Task AWriterThePipePausedDoesNotWaitForAHeldSend()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        // Each write is more than MaxWriteBufferSize, so the pipe pauses its flush until the send
        // loop advances past the bytes, which it does only once it has the send's completion: a
        // send whose completion the kernel held would leave the writer, and the connection, waiting.
        const int Writes = 10;
        const int WriteSize = 100 * 1024;
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 1; o.MaxWriteBufferSize = 64 * 1024; },
            listen => listen.Run(async connection =>
            {
                byte[] block = new byte[WriteSize];
                for (int i = 0; i < Writes; i++)
                {
                    block.AsSpan().Fill((byte)('a' + i));
                    await connection.Transport.Output.WriteAsync(block);
                }

                await connection.Transport.Output.CompleteAsync();
            }));
        Assert.True(server.Group.Rings[0].HoldsSendCompletions);

        using RawConnection client = await RawConnection.ConnectAsync(server.Port);
        byte[] received = await client.ReadToEndAsync().DefaultTimeout();
        Assert.Equal(Writes * WriteSize, received.Length);
        for (int i = 0; i < Writes; i++)
        {
            Assert.True(received.AsSpan(i * WriteSize, WriteSize).IndexOfAnyExcept((byte)('a' + i)) < 0, $"write {i} arrived wrong");
        }
    }

    [Fact]
    public async Task WithoutAHoldBoundNothingIsHeld()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        await using var sends = await OneSendEach.StartAsync(HoldMax - 1, holdMax: 0);
        Assert.False(sends.Ring.HoldsSendCompletions);
        long sentBefore = sends.Ring.BytesSent;
        await sends.SendAllInOneTurnAsync();
        await TestWait.UntilAsync(
            () => sends.Ring.BytesSent - sentBefore == sends.Count,
            () => $"the ring counted {sends.Ring.BytesSent - sentBefore} of {sends.Count} bytes sent");
        Assert.Equal(0, sends.Ring.KernelEventLoopDeferredNow);
    }

    [Fact]
    public async Task HoldingSendCompletionsSavesReturnsToUserSpacePerRequest()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        // The same keep-alive requests, one at a time, with nothing held and with the default
        // bound: each response's send completes at once, and held it no longer ends an enter of
        // its own. Counts, not times: firm under emulation.
        (double Enters, double Completions, double Deferred) without = await CountPerRequestAsync(holdMax: 0);
        (double Enters, double Completions, double Deferred) with = await CountPerRequestAsync(holdMax: null);
        TestContext.Current.TestOutputHelper?.WriteLine($"per request: without holding {without.Enters:F2} enters, {without.Completions:F2} CQEs, {without.Deferred:F2} held; with {with.Enters:F2} enters, {with.Completions:F2} CQEs, {with.Deferred:F2} held");
        Assert.Equal(0, without.Deferred);
        Assert.True(with.Deferred >= 0.5, $"{with.Deferred:F2} completions held per request");
        Assert.True(with.Enters < without.Enters, $"holding: {with.Enters:F2} enters per request, against {without.Enters:F2} without");
    }

    private static async Task<(double Enters, double Completions, double Deferred)> CountPerRequestAsync(int? holdMax)
    {
        const int Requests = 200;
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 1; o.TestHooks = new TransportTestHooks { KernelEventLoopHoldMax = holdMax }; },
            app: context =>
            {
                context.Response.ContentLength = 2;
                return context.Response.WriteAsync("ok");
            });
        RingThread ring = server.Group.Rings[0];
        using RawConnection client = await RawConnection.ConnectAsync(server.Port);
        byte[] buffer = new byte[4096];
        async Task RequestAsync()
        {
            await client.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            int received = 0;
            while (received < 4 || !buffer.AsSpan(0, received).EndsWith("\r\n\r\nok"u8))
            {
                int n = await client.ReceiveAsync(buffer.AsMemory(received));
                Assert.True(n > 0, "the server closed the connection");
                received += n;
            }
        }

        for (int i = 0; i < 20; i++)
        {
            await RequestAsync().DefaultTimeout(); // warm-up: JIT, Kestrel's first request
        }

        long enters = ring.Enters, completions = ring.Completions, deferred = ring.KernelEventLoopDeferredNow;
        for (int i = 0; i < Requests; i++)
        {
            await RequestAsync().DefaultTimeout();
        }

        return ((ring.Enters - enters) / (double)Requests, (ring.Completions - completions) / (double)Requests, (ring.KernelEventLoopDeferredNow - deferred) / (double)Requests);
    }

    /// <summary>
    /// Writes <paramref name="chunks"/> chunks, each once the previous one's send completed: held
    /// by the program (the send loop awaits that completion before it reads the pipe again, and
    /// nothing else happens on the ring), or, where the send loop read the pipe between the write
    /// and its publication (the writer then releases the send at once), counted by the ring.
    /// Then completes the output and reports how many of the sends were held.
    /// </summary>
    private static async Task WriteEachOnceTheLastIsHeldAsync(ConnectionContext connection, Task<RingThread> rings, int chunks, int chunkSize, TaskCompletionSource<int> held)
    {
        RingThread ring = await rings;
        PipeWriter output = connection.Transport.Output;
        byte[] chunk = new byte[chunkSize];
        long sentBefore = ring.BytesSent;
        int heldSends = 0;
        for (int i = 0; i < chunks; i++)
        {
            long deferred = ring.KernelEventLoopDeferredNow;
            chunk.AsSpan().Fill((byte)('a' + i));
            await output.WriteAsync(chunk);
            long sent = sentBefore + (long)(i + 1) * chunkSize;
            int written = i;
            await TestWait.UntilAsync(
                () => ring.KernelEventLoopDeferredNow > deferred || ring.BytesSent >= sent,
                () => $"chunk {written}'s send was neither held nor counted as sent");
            if (ring.KernelEventLoopDeferredNow > deferred)
            {
                heldSends++;
            }
        }

        await output.CompleteAsync();
        held.SetResult(heldSends);
    }

    /// <summary>
    /// Writes and flushes 8 bytes at a time, yielding between flushes so that the ring thread gets
    /// to send (and the kernel to hold) some of them, at least <paramref name="minFlushes"/> times
    /// and until the ring has held a send (at most <paramref name="maxFlushes"/>); then completes
    /// the output and reports how many it flushed.
    /// </summary>
    private static async Task FlushEightBytesAtATimeAsync(ConnectionContext connection, Task<RingThread> rings, int minFlushes, int maxFlushes, TaskCompletionSource<int> flushed)
    {
        RingThread ring = await rings;
        long deferredBefore = ring.KernelEventLoopDeferredNow;
        PipeWriter output = connection.Transport.Output;
        int flushes = 0;
        while (flushes < maxFlushes && (flushes < minFlushes || ring.KernelEventLoopDeferredNow == deferredBefore))
        {
            output.GetSpan(8)[..8].Fill((byte)'x');
            output.Advance(8);
            await output.FlushAsync();
            flushes++;
            await Task.Yield();
        }

        await output.CompleteAsync();
        flushed.SetResult(flushes);
    }

    /// <summary>
    /// <see cref="Count"/> connections on one ring whose handlers each write one byte when told
    /// (<see cref="SendAllInOneTurnAsync"/>) and then wait; the clients send nothing, so nothing
    /// else completes on the ring.
    /// </summary>
    private sealed class OneSendEach : IAsyncDisposable
    {
        private readonly IoUringServer _server;
        private readonly List<RawConnection> _clients;
        private readonly TaskCompletionSource _write;
        private readonly TaskCompletionSource _done;

        private OneSendEach(IoUringServer server, List<RawConnection> clients, TaskCompletionSource write, TaskCompletionSource done)
        {
            _server = server;
            _clients = clients;
            _write = write;
            _done = done;
        }

        public RingThread Ring => _server.Group.Rings[0];

        public int Count => _clients.Count;

        public static async Task<OneSendEach> StartAsync(int connections, int holdMax = HoldMax)
        {
            var write = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            int waiting = 0;
            IoUringServer server = await IoUringServer.StartAsync(
                o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 1; o.TestHooks = new TransportTestHooks { KernelEventLoopHoldMax = holdMax }; },
                listen => listen.Run(connection => WriteOneByteWhenToldAsync(connection, () => Interlocked.Increment(ref waiting), write.Task, done.Task)));
            var clients = new List<RawConnection>();
            for (int i = 0; i < connections; i++)
            {
                clients.Add(await RawConnection.ConnectAsync(server.Port));
            }

            await TestWait.UntilAsync(() => Volatile.Read(ref waiting) == connections, () => $"{Volatile.Read(ref waiting)} of {connections} handlers started");
            return new OneSendEach(server, clients, write, done);
        }

        private static async Task WriteOneByteWhenToldAsync(ConnectionContext connection, Action started, Task write, Task done)
        {
            started();
            await write;
            await connection.Transport.Output.WriteAsync("x"u8.ToArray());
            await done;
        }

        /// <summary>
        /// Has every handler write while the ring thread is held in a posted work item, so that
        /// their sends are posted meanwhile and submitted together, by one waiting enter; returns
        /// once every client received its byte.
        /// </summary>
        /// <remarks>
        /// The blocking work is posted only once the ring thread sleeps in the kernel, so that its
        /// wake (the eventfd write, made by Post) ends that sleep and is reaped before the sends
        /// go. Posted while the ring thread was on its way to sleep, the write could come after
        /// the ring thread had seen the work and gone round without sleeping: its wake would then
        /// complete in the enter that submits the sends, a completion that cannot wait, and
        /// return them all with it (seen under emulation, in the 7.2 VM).
        /// </remarks>
        public async Task SendAllInOneTurnAsync()
        {
            await TestWait.UntilAsync(() => Ring.KernelEventLoopAsleepNow, () => "the ring thread never slept in the kernel event loop");
            using var entered = new ManualResetEventSlim();
            using var release = new ManualResetEventSlim();
            Ring.Post(new BlockingWork(entered, release), 0);
            Assert.True(entered.Wait(TestWait.Default, TestContext.Current.CancellationToken), "the ring thread never ran the blocking work");
            try
            {
                _write.SetResult();
                await TestWait.UntilAsync(() => Ring.QueuedWork >= Count, () => $"{Ring.QueuedWork} of {Count} sends posted");
            }
            finally
            {
                release.Set();
            }

            foreach (RawConnection client in _clients)
            {
                byte[] one = new byte[1];
                Assert.Equal(1, await client.ReceiveAsync(one).DefaultTimeout());
                Assert.Equal((byte)'x', one[0]);
            }
        }

        public async ValueTask DisposeAsync()
        {
            _done.TrySetResult();
            foreach (RawConnection client in _clients)
            {
                client.Dispose();
            }

            await _server.DisposeAsync();
        }
    }

    /// <summary>A post that does nothing: its only effect is the wake, which brings back what the kernel event loop held (ObservabilityTests uses it too).</summary>
    internal sealed class NoWork : IRingWork
    {
        public void Execute(RingThread ring, int operation)
        {
        }

        public void Reject(int operation, Exception error)
        {
        }
    }
}
