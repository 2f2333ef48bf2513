using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Pipelines;
using System.Linq;
using System.Net.Http;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>The ring's provided receive buffers and pool blocks: every one comes home, slow readers cannot drain the ring, a dry ring loses nothing when connections abort.</summary>
/// <remarks>In the isolated collection, as before the split: one of them counts the process's descriptors and threads.</remarks>
[Collection(IsolatedCollection.Name)]
public class ReceiveBufferTests
{
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
            using RawConnection connection = await RawConnection.ConnectAsync(port);
            var payload = new byte[size];
            new Random(size + tag).NextBytes(payload);
            payload[0] = tag;
            Task<byte[]> echo = connection.ReadToEndAsync();
            await connection.SendAsync(payload);
            if (before is not null)
            {
                await before;
            }

            connection.HalfClose();
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

        Assert.All(await Task.WhenAll(fast).DefaultTimeout(times: 2), Assert.True);
        release.SetResult();
        Assert.All(await Task.WhenAll(stalled).DefaultTimeout(times: 2), Assert.True);
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

        var connections = new List<RawConnection>();
        try
        {
            var payload = new byte[256 * 1024];
            for (int i = 0; i < Connections; i++)
            {
                RawConnection connection = await RawConnection.ConnectAsync(port);
                connections.Add(connection);
                _ = connection.SendAsync(payload).ContinueWith(t => t.Exception, TaskScheduler.Default); // ends with a reset
            }

            // No event tells us the ring ran dry; watch its shortage count.
            await TestWait.UntilAsync(() => ring.BufferShortages > 0, () => "the ring never ran short of buffers");

            gate.SetResult();
            await allEnded.Task.DefaultTimeout();
        }
        finally
        {
            foreach (RawConnection connection in connections)
            {
                connection.Dispose();
            }
        }

        await server.StopAsync();
        Assert.Equal(0, ring.ActiveConnections);
        Assert.Equal(0, ring.BuffersInUse);
    }

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
