using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Bpf;
using IoUring.Interop;
using IoUring.Transport;
using IoUring.Transport.Internal;
using IoUring.Transport.Tests;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// Connection dispatch on the real kernel: which ring each new connection lands on. The server
/// writes one byte to every new connection, the index of the ring that owns it, so clients know.
/// </summary>
/// <remarks>
/// In the isolated collection (<see cref="IsolatedCollection"/>): <see cref="ReceiveBufferTests"/>
/// counts the process's descriptors and threads, which these servers change.
/// </remarks>
[Collection(IsolatedCollection.Name)]
public class DispatchTests
{
    [Fact]
    public async Task LeastConnectionsKeepsRingsEvenAfterSkewedClosesWhereTheKernelHashDoesNot()
    {
        SkipUnlessBpfCapable();
        int[] least = await RunSkewedPattern(ConnectionDispatch.LeastConnections);
        int[] kernel = await RunSkewedPattern(ConnectionDispatch.Kernel);
        int leastSpread = least.Max() - least.Min();
        int kernelSpread = kernel.Max() - kernel.Min();
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"Open connections per ring after 400 connections, closing all of ring 0's and half of ring 1's, then 200 more: " +
            $"LeastConnections [{string.Join(", ", least)}] (spread {leastSpread}), Kernel [{string.Join(", ", kernel)}] (spread {kernelSpread}).");
        Assert.True(leastSpread <= 2, $"LeastConnections left rings at [{string.Join(", ", least)}]");
        Assert.True(kernelSpread > leastSpread, $"the kernel's hash balanced as well ([{string.Join(", ", kernel)}]): the pattern shows nothing");
    }

    /// <summary>
    /// 4 rings; 400 connections; close every connection on ring 0 and every other one on ring 1;
    /// once the server has seen the closes, open 200 more. Returns the open connections per ring.
    /// </summary>
    private static async Task<int[]> RunSkewedPattern(ConnectionDispatch dispatch)
    {
        const int Rings = 4;
        await using DispatchServer server = await DispatchServer.StartAsync(dispatch, Rings);
        Assert.Equal(dispatch, server.Factory.ActiveDispatch);
        var open = new List<(Socket Socket, int Ring)>();
        try
        {
            for (int i = 0; i < 400; i++)
            {
                open.Add(server.Connect());
            }

            var closing = open.Where(c => c.Ring == 0).Concat(open.Where(c => c.Ring == 1).Where((_, i) => i % 2 == 0)).ToList();
            foreach ((Socket socket, int _) in closing)
            {
                socket.Dispose();
            }

            open = open.Except(closing).ToList();
            await server.WaitForActiveConnections(open.Count);
            for (int i = 0; i < 200; i++)
            {
                open.Add(server.Connect());
            }

            await server.WaitForActiveConnections(open.Count);
            int[] perRing = new int[Rings];
            foreach ((Socket _, int ring) in open)
            {
                perRing[ring]++;
            }

            // The server's own counts agree with what the clients were told.
            Assert.Equal(perRing, server.Rings.Select(r => (int)r.ActiveConnections).ToArray());
            if (dispatch == ConnectionDispatch.LeastConnections)
            {
                // What the program saw last: open, accepted and dispatched per ring. It counted each
                // SYN once and nothing else (late ACKs and FINs of closed connections also reach the
                // listeners), so every ring accepted exactly what was sent to it.
                var load = server.Rings.Select(r => r.Load!.Read()).ToList();
                TestContext.Current.TestOutputHelper?.WriteLine("Load map (active, accepted, dispatched): " + string.Join(", ", load));
                Assert.All(load, l => Assert.Equal(l.Accepted, l.Dispatched));
                Assert.Equal(perRing, load.Select(l => (int)l.Active).ToArray());
            }

            return perRing;
        }
        finally
        {
            foreach ((Socket socket, int _) in open)
            {
                socket.Dispose();
            }
        }
    }

    [Fact]
    public async Task LeastConnectionsKeepsBalancingTheLiveRingsAfterOneRingFails()
    {
        SkipUnlessBpfCapable();
        const int Rings = 4;
        await using DispatchServer server = await DispatchServer.StartAsync(ConnectionDispatch.LeastConnections, Rings);
        var open = new List<(Socket Socket, int Ring)>();
        try
        {
            // Ring 0 dies with no connection: its frozen count (0) would stay the smallest for good.
            RingThread dead = server.Rings[0];
            dead.Post(new ThrowingWork(), 0);
            // The ring's thread ends once its listeners are closed; no event reports that.
            await TestWait.UntilAsync(() => !dead.IsRunning, () => "the failed ring's thread did not end");

            Assert.Equal(RingLoadSlot.Dead, dead.Load!.Read().Active);
            for (int i = 0; i < 90; i++)
            {
                open.Add(server.Connect());
            }

            int[] perRing = new int[Rings];
            foreach ((Socket _, int ring) in open)
            {
                perRing[ring]++;
            }

            var load = server.Rings.Skip(1).Select(r => r.Load!.Read()).ToList();
            TestContext.Current.TestOutputHelper?.WriteLine($"Connections per ring [{string.Join(", ", perRing)}]; live rings' load (active, accepted, dispatched): {string.Join(", ", load)}");

            // The program, not the kernel's hash, placed every connection: each live ring accepted
            // exactly what the program sent it, and the three share the 90 evenly.
            Assert.Equal(0, perRing[0]);
            Assert.All(load, l => Assert.Equal(l.Accepted, l.Dispatched));
            Assert.Equal(90, load.Sum(l => l.Dispatched));
            Assert.True(perRing.Skip(1).Max() - perRing.Skip(1).Min() <= 2, $"the live rings hold [{string.Join(", ", perRing.Skip(1))}]");
        }
        finally
        {
            foreach ((Socket socket, int _) in open)
            {
                socket.Dispose();
            }
        }
    }

    [Fact]
    public async Task LeastConnectionsAcceptedNeverPassesDispatched()
    {
        SkipUnlessBpfCapable();
        await using DispatchServer server = await DispatchServer.StartAsync(ConnectionDispatch.LeastConnections, 2);

        // Ring 0 accepts a connection the program never dispatched (as one the kernel's hash placed
        // while a slot was empty would be), counted on the ring thread as the listener counts it.
        var counted = new CountAcceptedWork();
        server.Rings[0].Post(counted, 0);
        await counted.Done.Task.DefaultTimeout();
        Assert.Equal((0L, 0L, 0L), server.Rings[0].Load!.Read());

        // Had accepted become 1, the next connection sent to ring 0 would not count as pending there.
        var open = new List<(Socket Socket, int Ring)>();
        try
        {
            for (int i = 0; i < 4; i++)
            {
                open.Add(server.Connect());
            }

            Assert.All(server.Rings, r => Assert.Equal(r.Load!.Read().Dispatched, r.Load!.Read().Accepted));
            Assert.Equal(4, server.Rings.Sum(r => r.Load!.Read().Dispatched));
        }
        finally
        {
            foreach ((Socket socket, int _) in open)
            {
                socket.Dispose();
            }
        }
    }

    [Fact]
    public async Task IncomingCpuSendsConnectionsToTheRingPinnedToTheClientsCpu()
    {
        List<int> cpus = CpuAffinity.GetCurrentThread();
        if (cpus.Count < 2)
        {
            Assert.Skip($"Needs two CPUs to tell them apart; this process may run on {cpus.Count}.");
        }

        int rings = cpus.Count;
        await using DispatchServer server = await DispatchServer.StartAsync(ConnectionDispatch.IncomingCpu, rings);
        Assert.Equal(ConnectionDispatch.IncomingCpu, server.Factory.ActiveDispatch);
        foreach (int cpu in new[] { cpus[1], cpus[0] })
        {
            int expectedRing = ConnectionDispatcher.RingOfCpu(cpus, rings)[cpu];
            Assert.Equal(ExpectedCpus(cpus, rings, expectedRing), RingThreadCpus(server.Rings[expectedRing]));

            // Connect from a thread pinned to the CPU: over loopback the SYN is processed on the
            // sending CPU (no RPS on lo), so that is the CPU the program sees.
            int[] landed = PinnedThread.Run(cpu, () => Enumerable.Range(0, 20).Select(_ =>
            {
                (Socket socket, int ring) = server.Connect();
                socket.Dispose();
                return ring;
            }).ToArray());
            Assert.All(landed, ring => Assert.Equal(expectedRing, ring));
        }
    }

    [Fact]
    public async Task LeastConnectionsObjectsAreGoneFromTheKernelAfterTheHostStops()
    {
        SkipUnlessBpfCapable();
        var created = new List<(string Kind, uint Id)>();
        for (int run = 0; run < 2; run++)
        {
            // Twice: a second bind in the same process must not keep the first one's objects.
            await using DispatchServer server = await DispatchServer.StartAsync(ConnectionDispatch.LeastConnections, 2);
            (Socket socket, int _) = server.Connect();
            socket.Dispose();
            created.AddRange(server.Hooks.CreatedBpfObjects);
        }

        // Program, listener map and load map of each run, plus each run's start-up trial program and map.
        Assert.Equal(10, created.Count);
        Assert.Equal(10, created.Distinct().Count());

        // The kernel frees a reuseport group's program after an RCU grace period; nothing signals
        // that to user space, so poll (bounded) until the ids are gone.
        List<(string Kind, uint Id)> alive = [];
        await TestWait.UntilAsync(
            () => (alive = created.Where(o => o.Kind == "program" ? BpfSyscall.ProgramExists(o.Id) : BpfSyscall.MapExists(o.Id)).ToList()).Count == 0,
            () => $"still in the kernel: {string.Join(", ", alive)}");
    }

    [Fact]
    public async Task WithoutCapabilitiesLeastConnectionsFallsBackToTheKernelHashWithOneWarning()
    {
        (string output, int? exitCode) = await RunSampleWithoutCapabilities(strict: false);
        Assert.True(exitCode is null, $"the sample (or setpriv) exited with {exitCode} instead of serving:\n{output}");
        Assert.True(output.Contains("Dispatch: Kernel", StringComparison.Ordinal), output);
        Assert.True(output.Contains("Transport: io_uring", StringComparison.Ordinal), output);
        Assert.Equal(1, Count(output, "IoUring.Transport[16]")); // event 16: DispatchFallback
        Assert.True(output.Contains("CAP_BPF and CAP_NET_ADMIN", StringComparison.Ordinal), output);

        (string strictOutput, int? strictExit) = await RunSampleWithoutCapabilities(strict: true);
        Assert.True(strictExit is not null and not 0, $"the strict sample should have exited with an error, not {(strictExit is null ? "kept running" : "0")}:\n{strictOutput}");
        Assert.True(strictOutput.Contains("FallbackToKernelDispatch is false", StringComparison.Ordinal), strictOutput);
        Assert.False(strictOutput.Contains("Listening on:", StringComparison.Ordinal), strictOutput);
    }

    /// <summary>Skips a LeastConnections test, naming the capability, when this process may not load BPF programs (CI runs as root and does not skip).</summary>
    private static void SkipUnlessBpfCapable()
    {
        string? missing = BpfPrivileges.MissingForReuseportPrograms();
        if (missing is not null)
        {
            Assert.Skip($"LeastConnections needs {missing}, which this process lacks.");
        }
    }

    private static int Count(string text, string value)
    {
        int count = 0;
        for (int at = text.IndexOf(value, StringComparison.Ordinal); at >= 0; at = text.IndexOf(value, at + 1, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    /// <summary>
    /// Runs samples/HelloWorld with LeastConnections under setpriv with every capability dropped
    /// (root without capabilities cannot use bpf()), until it reports that it listens or exits.
    /// Returns its output and its exit code, or null when it was still running (listening) and
    /// this stopped it.
    /// </summary>
    private static async Task<(string Output, int? ExitCode)> RunSampleWithoutCapabilities(bool strict)
    {
        string sample = SampleApp.PathOf("HelloWorld");
        var start = new ProcessStartInfo("setpriv")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[] { "--inh-caps=-all", "--bounding-set=-all", "--", Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", sample })
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["ASPNETCORE_URLS"] = "http://127.0.0.1:0";
        start.Environment["DOTNET_ENVIRONMENT"] = "Production";
        start.Environment["IoUring__Dispatch"] = "LeastConnections";
        start.Environment["IoUring__RingCount"] = "2";
        start.Environment["IoUring__FallbackToSockets"] = "false";
        start.Environment["IoUring__FallbackToKernelDispatch"] = strict ? "false" : "true";
        start.Environment["Logging__Console__FormatterOptions__SingleLine"] = "true";

        using Process process = Process.Start(start)!;
        bool killed = false;
        var output = new System.Text.StringBuilder();
        var listening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            lock (output)
            {
                output.AppendLine(e.Data);
            }

            if (e.Data?.StartsWith("Listening on:", StringComparison.Ordinal) == true)
            {
                listening.TrySetResult();
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            lock (output)
            {
                output.AppendLine(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            using var timeout = new CancellationTokenSource(TestWait.Default * 2);
            Task exited = process.WaitForExitAsync(timeout.Token);
            await Task.WhenAny(listening.Task, exited).WaitAsync(timeout.Token);
        }
        finally
        {
            if (!process.HasExited)
            {
                killed = true;
                process.Kill(entireProcessTree: true);
            }

            await process.WaitForExitAsync(TestContext.Current.CancellationToken);
        }

        lock (output)
        {
            return (output.ToString(), killed ? null : process.ExitCode);
        }
    }

    private static int[] ExpectedCpus(List<int> cpus, int rings, int ring) => ConnectionDispatcher.RingOfCpu(cpus, rings).Where(e => e.Value == ring).Select(e => e.Key).Order().ToArray();

    /// <summary>The CPUs the kernel lets <paramref name="ring"/>'s thread run on (/proc/self/task/*/status).</summary>
    private static int[] RingThreadCpus(RingThread ring)
    {
        string line = File.ReadAllLines(Path.Combine(RingThreadTask.Of(ring), "status")).Single(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal));
        return ParseCpuList(line["Cpus_allowed_list:".Length..].Trim());
    }

    private static int[] ParseCpuList(string list) => list.Split(',').SelectMany(part =>
    {
        string[] range = part.Split('-');
        int first = int.Parse(range[0], System.Globalization.CultureInfo.InvariantCulture);
        int last = range.Length > 1 ? int.Parse(range[1], System.Globalization.CultureInfo.InvariantCulture) : first;
        return Enumerable.Range(first, last - first + 1);
    }).ToArray();

    /// <summary>A host whose one TCP endpoint tells each connection its ring, then waits for the client to close.</summary>
    private sealed class DispatchServer : IAsyncDisposable
    {
        private readonly IoUringServer _server;

        private DispatchServer(IoUringServer server, TransportTestHooks hooks)
        {
            _server = server;
            Hooks = hooks;
        }

        /// <summary>What the transport recorded (the BPF objects dispatch created).</summary>
        public TransportTestHooks Hooks { get; }

        public int Port => _server.Port;

        public IoUringTransportFactory Factory => _server.Factory;

        public RingThread[] Rings => _server.Group.Rings;

        public static async Task<DispatchServer> StartAsync(ConnectionDispatch dispatch, int rings)
        {
            // No placement by the kernel event loop (the 7.2 legs run with it): these tests are of
            // the reuseport dispatch alone, and placement would move the kernel hash's connections.
            var hooks = new TransportTestHooks { KernelEventLoopPlacement = false };
            return new(await IoUringServer.StartAsync(
                o =>
                {
                    o.TestHooks = hooks;
                    o.FallbackToKernelDispatch = false;
                    o.RingCount = rings;
                    o.Dispatch = dispatch;
                },
                listen => listen.Run(async connection =>
                {
                    byte ring = (byte)((IoUringConnection)connection).Ring.Index;
                    await connection.Transport.Output.WriteAsync(new[] { ring });
                    while (true)
                    {
                        System.IO.Pipelines.ReadResult read = await connection.Transport.Input.ReadAsync();
                        connection.Transport.Input.AdvanceTo(read.Buffer.End);
                        if (read.IsCompleted || read.IsCanceled)
                        {
                            break;
                        }
                    }
                })), hooks);
        }

        /// <summary>Connects (blocking, on the calling thread) and reads which ring took the connection.</summary>
        public (Socket Socket, int Ring) Connect()
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                socket.Connect(IPAddress.Loopback, Port);
                socket.ReceiveTimeout = (int)TestWait.Default.TotalMilliseconds;
                byte[] ring = new byte[1];
                Assert.Equal(1, socket.Receive(ring));
                return (socket, ring[0]);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        /// <summary>
        /// Waits until the rings count <paramref name="expected"/> open connections: closes reach the
        /// server asynchronously (FIN, the handler's return, the ring's close), and no event reports
        /// the ring's count, so this polls it with a deadline.
        /// </summary>
        public async Task WaitForActiveConnections(int expected)
        {
            await TestWait.UntilAsync(
                () => Rings.Sum(r => r.ActiveConnections) == expected,
                () => $"the rings count {Rings.Sum(r => r.ActiveConnections)} open connections, not {expected}");
        }

        public ValueTask DisposeAsync() => _server.DisposeAsync();
    }

    /// <summary>Makes the ring that runs it fail, as a bug in the ring loop would.</summary>
    private sealed class ThrowingWork : IRingWork
    {
        public void Execute(RingThread ring, int operation) => throw new InvalidOperationException("Injected ring failure.");

        public void Reject(int operation, Exception error)
        {
        }
    }

    private sealed class CountAcceptedWork : IRingWork
    {
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Execute(RingThread ring, int operation)
        {
            ring.Load!.CountAccepted();
            Done.TrySetResult();
        }

        public void Reject(int operation, Exception error) => Done.TrySetException(error);
    }
}
