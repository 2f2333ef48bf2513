using System;
using System.Linq;
using System.Net.Http;
using System.Threading.Tasks;
using IoUring.Bpf;
using IoUring.Transport;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// The kernel event loop (<see cref="IoUringTransportOptions.KernelEventLoop"/>): on a kernel with
/// struct io_uring_bpf_ops (Linux 7.1+; the 7.2 leg of scripts/test-kernels.sh) each ring runs the
/// program, serves, sleeps in the kernel when idle and leaves nothing behind; on one without it
/// (the host's 6.18, 6.1) Required fails at start naming what is missing and WhereAvailable serves
/// on the user-space loop with one warning. Each test asserts what the running kernel must do.
/// </summary>
[Collection(IsolatedCollection.Name)]
public class KernelEventLoopTests
{
    internal const string NeedsTheLoop = "Needs the io_uring BPF event loop (struct io_uring_bpf_ops, Linux 7.1+): it runs in the 7.2 legs of scripts/test-kernels.sh.";

    private static readonly bool s_kernelHasLoop = IoUringTransportFactory.IsIoUringBpfLoopAvailable;

    [Fact]
    public async Task RequiredRunsEveryRingInTheKernelOrFailsAtStartNamingWhatIsMissing()
    {
        if (!s_kernelHasLoop)
        {
            InvalidOperationException refused = await Assert.ThrowsAsync<InvalidOperationException>(
                () => IoUringServer.StartAsync(o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 2; }));
            Assert.Contains("KernelEventLoop is Required", refused.Message, StringComparison.Ordinal);
            Assert.Contains("io_uring_bpf_ops", refused.Message, StringComparison.Ordinal);
            return;
        }

        (uint Program, uint Map, uint Link)[] ids;
        await using (IoUringServer server = await IoUringServer.StartAsync(
            o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 2; },
            app: context => context.Response.WriteAsync("kernel")))
        {
            Assert.Equal(2, server.Factory.KernelEventLoopRings);
            Assert.All(server.Group.Rings, r => Assert.True(r.RunsKernelEventLoop));
            ids = server.Group.Rings.Select(r => r.KernelEventLoopIds).ToArray();
            Assert.All(ids, id => Assert.True(BpfSyscall.ProgramExists(id.Program) && BpfSyscall.MapExists(id.Map) && BpfSyscall.LinkExists(id.Link)));

            // Keep-alive requests and a new connection per request: accepts, receives, sends and
            // cross-thread posts (the send loop's) all go through the program.
            using (HttpClient client = new() { BaseAddress = new Uri($"http://127.0.0.1:{server.Port}/") })
            {
                for (int i = 0; i < 50; i++)
                {
                    Assert.Equal("kernel", await client.GetStringAsync("/", TestContext.Current.CancellationToken).DefaultTimeout());
                }
            }

            for (int i = 0; i < 20; i++)
            {
                using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
                await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                string response = await connection.ReadToEndAsStringAsync().DefaultTimeout();
                Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
                Assert.EndsWith("\r\n6\r\nkernel\r\n0\r\n\r\n", response, StringComparison.Ordinal); // chunked: no Content-Length was set
            }

            Assert.All(server.Group.Rings, r => Assert.True(r.KernelEventLoopSteps > 0, $"ring {r.Index}'s program never ran"));
            Assert.True(server.Group.Rings.Sum(r => r.Submissions) > 0, "the program's submissions are counted");
        }

        // Stopped: every ring's program, struct_ops map and link leave the kernel. The kernel frees
        // them after an RCU grace period once the last descriptor is closed (a sleepable program's
        // is an RCU tasks-trace one, slow under emulation), and says so through no event: poll.
        await TestWait.UntilAsync(
            () => ids.All(id => !BpfSyscall.ProgramExists(id.Program) && !BpfSyscall.MapExists(id.Map) && !BpfSyscall.LinkExists(id.Link)),
            () => $"a ring's program, map or link outlived the host: {string.Join(", ", ids.Select(id => $"program {id.Program} {BpfSyscall.ProgramExists(id.Program)}, map {id.Map} {BpfSyscall.MapExists(id.Map)}, link {id.Link} {BpfSyscall.LinkExists(id.Link)}"))}");
    }

    [Fact]
    public async Task ARingThatFailsWithTheLoopAttachedResetsItsConnectionsAndDetachesTheLoop()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        var logs = new CapturingLoggerProvider();
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 1; },
            ConnectionMiddlewareTests.Echo,
            logs: logs);
        RingThread ring = server.Group.Rings[0];
        (uint Program, uint Map, uint Link) ids = ring.KernelEventLoopIds;
        using RawConnection client = await RawConnection.ConnectAsync(server.Port);
        Assert.Equal("ping"u8.ToArray(), await client.EchoAsync("ping"u8.ToArray()).DefaultTimeout());

        ring.Post(new RingLifetimeTests.ThrowingWork(), 0);

        // The ring's failure ends its connection (a reset, or the end of the stream) and its
        // clean-up closes the ring and the loop's link: the program, map and link leave the
        // kernel while the host still runs (after the kernel's RCU-deferred frees).
        (_, _) = await client.ReadToEndOrResetAsync().DefaultTimeout();
        await TestWait.UntilAsync(() => !ring.IsRunning, () => "the failed ring's thread is still running");
        await TestWait.UntilAsync(
            () => !BpfSyscall.ProgramExists(ids.Program) && !BpfSyscall.MapExists(ids.Map) && !BpfSyscall.LinkExists(ids.Link),
            () => $"the failed ring's program {ids.Program}, map {ids.Map} or link {ids.Link} is still in the kernel");
        Assert.Single(logs.Entries, e => e.EventId.Name == "RingFailed");
    }

    [Fact]
    public async Task WhereAvailableRunsInTheKernelOrServesInUserSpaceWithOneWarning()
    {
        var logs = new CapturingLoggerProvider();
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.KernelEventLoop = KernelEventLoop.WhereAvailable; o.RingCount = 2; },
            app: context => context.Response.WriteAsync("served"),
            logs: logs,
            minimumLevel: LogLevel.Debug);
        using (HttpClient client = new() { BaseAddress = new Uri($"http://127.0.0.1:{server.Port}/") })
        {
            Assert.Equal("served", await client.GetStringAsync("/", TestContext.Current.CancellationToken).DefaultTimeout());
        }

        var fallbacks = logs.Entries.Where(e => e.EventId.Name == "KernelEventLoopFallback").ToList();
        if (s_kernelHasLoop)
        {
            Assert.Empty(fallbacks);
            Assert.Equal(2, server.Factory.KernelEventLoopRings);
        }
        else
        {
            var warning = Assert.Single(fallbacks);
            Assert.Equal(LogLevel.Warning, warning.Level);
            Assert.Contains("io_uring_bpf_ops", warning.Message, StringComparison.Ordinal);
            Assert.Equal(0, server.Factory.KernelEventLoopRings);
            Assert.All(server.Group.Rings, r => Assert.Equal(0, r.KernelEventLoopSteps));
        }

        Assert.Contains(logs.Entries, e => e.EventId.Name == "KernelEventLoopStarted" && e.Message.Contains($"running on {server.Factory.KernelEventLoopRings} of 2 rings", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AnIdleRingSleepsInTheKernelInsteadOfSpinning()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        await using IoUringServer server = await IoUringServer.StartAsync(o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = 1; });
        RingThread ring = server.Group.Rings[0];
        using (HttpClient client = new() { BaseAddress = new Uri($"http://127.0.0.1:{server.Port}/") })
        {
            await client.GetAsync("/", TestContext.Current.CancellationToken).DefaultTimeout();
        }

        // The client is gone; once the ring has slept in the kernel it has nothing left to do.
        // Over a quiet two seconds a loop that spun in the kernel (CONTINUE without a wait) would
        // burn the whole time on its thread; a sleeping one nothing, or a tick or two.
        await TestWait.UntilAsync(() => ring.KernelEventLoopSleeps > 0, () => "the ring never slept in the kernel");
        long before = RingThreadCpuTicks(ring);
        await Task.Delay(TimeSpan.FromSeconds(2), TestContext.Current.CancellationToken); // the window measured, not a wait for an event
        long used = RingThreadCpuTicks(ring) - before;
        Assert.True(used < 10, $"the idle ring's thread used {used} clock ticks of CPU in two seconds");
    }

    /// <summary>User plus system CPU time of <paramref name="ring"/>'s thread, in clock ticks (proc(5): stat fields 14 and 15).</summary>
    private static long RingThreadCpuTicks(RingThread ring)
    {
        string stat = System.IO.File.ReadAllText(System.IO.Path.Combine(RingThreadTask.Of(ring), "stat"));
        // pid (comm) state ...: the name may hold spaces; the fields follow the last ')', field 3 (state) first.
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture);
    }
}
