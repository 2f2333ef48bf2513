using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading.Tasks;
using IoUring.Transport;
using IoUring.Transport.Internal;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// Placement of accepted connections by load in the kernel (bpf/event_loop.bpf.c, place_connection;
/// RingPlacement): a ring whose kernel event loop sees an accept while it has more open connections
/// than the least loaded ring by more than the margin hands the descriptor to that ring with
/// IORING_OP_MSG_RING, and that ring's loop arms the connection's first receive. For TCP (one
/// listening socket per ring, the kernel's hash chooses the accepting ring) and for a Unix socket
/// (one listening socket, whose ring the program places from). A hand-over that fails leaves the
/// connection with the accepting ring. On Linux 7.2 (the 7.2 legs of scripts/test-kernels.sh);
/// skipped where the kernel has no io_uring BPF event loop, as the other kernel loop tests.
/// </summary>
[Collection(IsolatedCollection.Name)]
public class KernelEventLoopPlacementTests
{
    private const string NeedsTheLoop = KernelEventLoopTests.NeedsTheLoop;
    private const int Rings = 4;
    private const uint NoPlacement = 1_000_000; // a margin no load difference passes

    private static readonly bool s_kernelHasLoop = IoUringTransportFactory.IsIoUringBpfLoopAvailable;

    [Fact]
    public async Task TcpConnectionsAcceptedOnABusyRingGoToTheLessLoadedRings()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        const int Skew = 12;
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = Rings; o.TestHooks = new TransportTestHooks { KernelEventLoopPlaceMargin = NoPlacement }; },
            ConnectionMiddlewareTests.Echo);
        RingThread[] rings = server.Group.Rings;
        Assert.NotNull(server.Group.Placement);
        var clients = new List<RawConnection>();
        try
        {
            // The skew: ring 0 holds Skew open connections, the others none. Placement is off (the
            // margin is out of reach), so each connection stays on the ring the kernel's hash chose;
            // those that landed elsewhere are closed again.
            for (int attempt = 0; rings[0].ActiveConnections < Skew; attempt++)
            {
                Assert.True(attempt < 400, $"the kernel's hash gave ring 0 only {rings[0].ActiveConnections} of {attempt} connections");
                (RawConnection client, int ring) = await ConnectAsync(rings, () => RawConnection.ConnectAsync(server.Port));
                if (ring == 0)
                {
                    clients.Add(client);
                    continue;
                }

                client.Dispose();
                await TestWait.UntilAsync(() => rings[ring].ActiveConnections == 0, () => $"ring {ring} still has {rings[ring].ActiveConnections} connections");
            }

            long acceptedOnRing0 = rings[0].ConnectionsAccepted;
            await SetMarginAsync(rings, 1);

            // Now every connection the hash gives ring 0 goes to a less loaded ring while ring 0 is
            // busier than the least loaded one by more than 1; connections the hash gives the other
            // rings stay among them. Ring 0 keeps its Skew.
            int added = 0;
            while (rings.Skip(1).Min(r => r.ActiveConnections) < Skew - 3)
            {
                (RawConnection client, int ring) = await ConnectAsync(rings, () => RawConnection.ConnectAsync(server.Port));
                clients.Add(client);
                added++;
                Assert.NotEqual(0, ring);
                Assert.Equal(Skew, rings[0].ActiveConnections);
            }

            long placed = rings[0].KernelEventLoopPlacedNow;
            TestContext.Current.TestOutputHelper?.WriteLine($"{added} connections: ring 0 handed over {placed}; open per ring: {string.Join(", ", rings.Select(r => r.ActiveConnections))}");
            Assert.Equal(acceptedOnRing0, rings[0].ConnectionsAccepted); // it started none of them itself
            Assert.True(placed >= 1, $"the kernel's hash gave ring 0 none of {added} connections: nothing to place");
            Assert.Equal(added, rings.Skip(1).Sum(r => r.ActiveConnections));
        }
        finally
        {
            foreach (RawConnection client in clients)
            {
                client.Dispose();
            }
        }
    }

    /// <summary>
    /// The endpoints with one listening socket: a Unix socket, and an adopted handle (a listening
    /// TCP socket the host was given, as systemd's socket activation does).
    /// </summary>
    [Theory]
    [InlineData("unix")]
    [InlineData("handle")]
    public async Task OneSocketEndpointsConnectionsGoToTheLeastLoadedRings(string endpoint)
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        string path = Path.Combine(Path.GetTempPath(), $"iouring-place-{Guid.NewGuid():N}.sock");
        ulong handle = 0;
        int port = 0;
        if (endpoint == "handle")
        {
            using var listenSocket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            listenSocket.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
            listenSocket.Listen(128);
            port = ((System.Net.IPEndPoint)listenSocket.LocalEndPoint!).Port;
            handle = (ulong)NativeMethods.Dup((int)listenSocket.SafeHandle.DangerousGetHandle()); // the server owns the copy
        }

        Func<Task<RawConnection>> connect = endpoint == "handle" ? () => RawConnection.ConnectAsync(port) : () => RawConnection.ConnectUnixAsync(path);
        var clients = new List<RawConnection>();
        try
        {
            await using IoUringServer server = await IoUringServer.StartAsync(
                o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = Rings; o.TestHooks = new TransportTestHooks { KernelEventLoopPlaceMargin = NoPlacement }; },
                ConnectionMiddlewareTests.Echo,
                kestrel: k =>
                {
                    if (endpoint == "handle")
                    {
                        k.ListenHandle(handle, ConnectionMiddlewareTests.Echo);
                    }
                    else
                    {
                        k.ListenUnixSocket(path, ConnectionMiddlewareTests.Echo);
                    }
                });
            RingThread[] rings = server.Group.Rings;

            // One listening socket, on one ring. With placement out of reach its connections all
            // stay there (no dealing in turn, as without the kernel loop).
            const int Skew = 6;
            int listenerRing = -1;
            for (int i = 0; i < Skew; i++)
            {
                (RawConnection client, int ring) = await ConnectAsync(rings, connect);
                clients.Add(client);
                Assert.True(listenerRing < 0 || ring == listenerRing, $"connection {i} went to ring {ring}, the ones before to ring {listenerRing}");
                listenerRing = ring;
            }

            long[] armedBefore = rings.Select(r => r.KernelEventLoopArmedNow).ToArray();
            await SetMarginAsync(rings, 1);

            // Each new connection goes to the least loaded ring (the lowest index among equals): the
            // three others fill up evenly, and the listener's ring keeps its Skew.
            const int Added = 9;
            for (int i = 0; i < Added; i++)
            {
                (RawConnection client, int ring) = await ConnectAsync(rings, connect);
                clients.Add(client);
                Assert.NotEqual(listenerRing, ring);
            }

            TestContext.Current.TestOutputHelper?.WriteLine($"open per ring: {string.Join(", ", rings.Select(r => r.ActiveConnections))} (listener on ring {listenerRing})");
            for (int r = 0; r < Rings; r++)
            {
                Assert.Equal(r == listenerRing ? Skew : Added / (Rings - 1), rings[r].ActiveConnections);
                if (r != listenerRing)
                {
                    // Each adopted connection's first receive was armed by the target's program.
                    Assert.Equal(Added / (Rings - 1), rings[r].KernelEventLoopArmedNow - armedBefore[r]);
                }
            }

            Assert.Equal(Added, rings[listenerRing].KernelEventLoopPlacedNow);
        }
        finally
        {
            foreach (RawConnection client in clients)
            {
                client.Dispose();
            }

            File.Delete(path);
        }
    }

    [Fact]
    public async Task AHandoverThatFailsLeavesTheConnectionWithItsRing()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        string path = Path.Combine(Path.GetTempPath(), $"iouring-place-{Guid.NewGuid():N}.sock");
        var logs = new CapturingLoggerProvider();
        var clients = new List<RawConnection>();
        try
        {
            await using IoUringServer server = await IoUringServer.StartAsync(
                o =>
                {
                    o.KernelEventLoop = KernelEventLoop.Required;
                    o.RingCount = Rings;
                    o.TestHooks = new TransportTestHooks { KernelEventLoopPlaceMargin = NoPlacement, KernelEventLoopPlaceBrokenTargets = true };
                },
                ConnectionMiddlewareTests.Echo,
                kestrel: k => k.ListenUnixSocket(path, ConnectionMiddlewareTests.Echo),
                logs: logs,
                minimumLevel: Microsoft.Extensions.Logging.LogLevel.Debug);
            RingThread[] rings = server.Group.Rings;
            (RawConnection first, int listenerRing) = await ConnectAsync(rings, () => RawConnection.ConnectUnixAsync(path));
            clients.Add(first);
            await SetMarginAsync(rings, 0);

            // The program hands each connection to an idle ring, but every ring's descriptor it
            // knows is broken (-1): the MSG_RING fails with EBADF, its CQE comes back, and the
            // listener's ring serves the connection itself.
            for (int i = 0; i < 3; i++)
            {
                (RawConnection client, int ring) = await ConnectAsync(rings, () => RawConnection.ConnectUnixAsync(path));
                clients.Add(client);
                Assert.Equal(listenerRing, ring);
            }

            Assert.Equal(4, rings[listenerRing].ActiveConnections);
            Assert.Equal(3, rings[listenerRing].KernelEventLoopPlacedNow); // the program queued three hand-overs
            Assert.Equal(3, logs.Entries.Count(e => e.EventId.Name == "ConnectionHandoverFailed" && e.Message.Contains("errno 9", StringComparison.Ordinal)));
        }
        finally
        {
            foreach (RawConnection client in clients)
            {
                client.Dispose();
            }

            File.Delete(path);
        }
    }

    [Fact]
    public async Task StoppingWhileConnectionsAreHandedOverLeavesNoSocketOpen()
    {
        Assert.SkipUnless(s_kernelHasLoop, NeedsTheLoop);

        string path = Path.Combine(Path.GetTempPath(), $"iouring-place-{Guid.NewGuid():N}.sock");
        var logs = new CapturingLoggerProvider();
        int socketsBefore = OpenSockets();
        var clients = new List<RawConnection>();
        try
        {
            IoUringServer server = await IoUringServer.StartAsync(
                o => { o.KernelEventLoop = KernelEventLoop.Required; o.RingCount = Rings; o.TestHooks = new TransportTestHooks { KernelEventLoopPlaceMargin = 0 }; },
                ConnectionMiddlewareTests.Echo,
                kestrel: k => k.ListenUnixSocket(path, ConnectionMiddlewareTests.Echo),
                logs: logs);
            RingThread[] rings = server.Group.Rings;
            try
            {
                // A burst of clients, and the host stops in the middle of it: whichever ring each
                // connection was accepted on, handed to, or handed back to after a failure, it is
                // served, refused or closed; no descriptor is left behind.
                Task stopped = Task.CompletedTask;
                for (int i = 0; i < 24; i++)
                {
                    try
                    {
                        RawConnection client = await RawConnection.ConnectUnixAsync(path);
                        clients.Add(client);
                        await client.SendAsync("x");
                        client.HalfClose(); // the echo ends when it has answered
                    }
                    catch (System.Net.Sockets.SocketException)
                    {
                        break; // the listener is gone
                    }

                    if (i == 12)
                    {
                        await TestWait.UntilAsync(() => rings.Sum(r => r.KernelEventLoopPlacedNow) >= 1, () => "nothing was handed over: the test would not test placement");
                        stopped = server.StopAsync();
                    }
                }

                foreach (RawConnection client in clients)
                {
                    _ = await client.ReadToEndOrResetAsync().DefaultTimeout();
                }

                await stopped.DefaultTimeout();
            }
            finally
            {
                await server.DisposeAsync();
            }

            foreach (RingThread ring in rings)
            {
                Assert.True(ring.WaitForExit(TestWait.Default), $"ring {ring.Index} did not end");
                Assert.Equal(0, ring.ActiveConnections);
            }

            Assert.DoesNotContain(logs.Entries, e => e.EventId.Name is "RingFailed" or "ConnectionError" or "ListenerError");
        }
        finally
        {
            foreach (RawConnection client in clients)
            {
                client.Dispose();
            }

            File.Delete(path);
        }

        await TestWait.UntilAsync(() => OpenSockets() <= socketsBefore, () => $"{OpenSockets()} sockets open, {socketsBefore} before the server started");
    }

    /// <summary>The process's open socket descriptors (proc(5): /proc/self/fd links to "socket:[inode]").</summary>
    private static int OpenSockets()
    {
        int sockets = 0;
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) == true)
                {
                    sockets++;
                }
            }
            catch (IOException)
            {
                // closed meanwhile
            }
        }

        return sockets;
    }

    /// <summary>
    /// Connects one client and echoes through it, so its connection is open on some ring when this
    /// returns; returns that ring (the one whose open connections grew: nothing else connects).
    /// </summary>
    private static async Task<(RawConnection Client, int Ring)> ConnectAsync(RingThread[] rings, Func<Task<RawConnection>> connect)
    {
        long[] before = rings.Select(r => r.ActiveConnections).ToArray();
        RawConnection client = await connect();
        try
        {
            // Not EchoAsync, which half-closes: the connection stays open, counted on its ring.
            await client.SendAsync("ping").DefaultTimeout();
            byte[] echo = new byte[4];
            for (int received = 0; received < echo.Length;)
            {
                int n = await client.ReceiveAsync(echo.AsMemory(received)).DefaultTimeout();
                Assert.True(n > 0, $"the connection ended after {received} bytes");
                received += n;
            }

            Assert.Equal("ping"u8.ToArray(), echo);
        }
        catch
        {
            client.Dispose();
            throw;
        }

        int ring = -1;
        for (int i = 0; i < rings.Length; i++)
        {
            long now = rings[i].ActiveConnections;
            if (now == before[i] + 1)
            {
                Assert.True(ring < 0, "two rings gained a connection");
                ring = i;
            }
            else
            {
                Assert.Equal(before[i], now);
            }
        }

        Assert.True(ring >= 0, "no ring gained the connection");
        return (client, ring);
    }

    /// <summary>Sets the placement margin on every ring (each on its own thread) and waits for it.</summary>
    private static async Task SetMarginAsync(RingThread[] rings, uint margin)
    {
        var works = rings.Select(_ => new MarginWork(margin)).ToArray();
        for (int i = 0; i < rings.Length; i++)
        {
            rings[i].Post(works[i], 0);
        }

        foreach (MarginWork work in works)
        {
            await work.Done.Task.DefaultTimeout();
        }
    }

    private sealed class MarginWork(uint margin) : IRingWork
    {
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Execute(RingThread ring, int operation)
        {
            ring.SetPlaceMargin(margin);
            Done.TrySetResult();
        }

        public void Reject(int operation, Exception error) => Done.TrySetException(error);
    }
}
