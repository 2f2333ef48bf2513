using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using IoUring.Interop;
using Xunit;
using static IoUring.Tests.Ring.RingTestHelpers;

namespace IoUring.Tests.Ring;

/// <summary>Multishot accept and multishot receive with provided buffer rings.</summary>
public unsafe class MultishotTests
{
    [Fact]
    public void OneAcceptSqeAcceptsAHundredConnections()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(128);
        using var ring = IoUring.Ring.Create();
        Sqe* sqe = ring.GetSqe();
        sqe->PrepMultishotAccept((int)listener.SafeHandle.DangerousGetHandle(), 0x80000 | 0x800);
        sqe->UserData = 42;
        ring.Submit();

        var clients = new List<Socket>();
        var accepted = new List<int>();
        try
        {
            for (int i = 0; i < 100; i++)
            {
                var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                client.Connect(listener.LocalEndPoint!);
            }

            while (accepted.Count < 100)
            {
                Cqe cqe = WaitCqe(ring);
                Assert.Equal(42UL, cqe.UserData);
                Assert.True(cqe.Res >= 0, $"accept failed: {cqe.Res}");
                Assert.True(cqe.HasMore, "the multishot accept ended early");
                accepted.Add(cqe.Res);
            }

            Assert.Equal(100, new HashSet<int>(accepted).Count);
        }
        finally
        {
            foreach (int fd in accepted)
            {
                Libc.Close(fd);
            }

            foreach (Socket client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public void MultishotRecvSurvivesTheBufferRingRunningDry()
    {
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            using var buffers = BufferRing.Create(ring, groupId: 3, count: 4, bufferSize: 64);
            byte[] payload = Pattern(5000, 5);
            var received = new List<byte>();

            Arm(ring, b, buffers.GroupId, bundle: false);
            WriteAll(a, payload);
            int rearms = 0, enobufs = 0;
            var held = new List<ushort>();
            while (received.Count < payload.Length)
            {
                Cqe cqe = WaitCqe(ring);
                if (cqe.Res == -Errno.ENOBUFS)
                {
                    // The ring ran dry: the kernel ended the multishot (no F_MORE). Give the
                    // buffers back, then re-arm; the unread data is still in the socket.
                    Assert.False(cqe.HasMore);
                    enobufs++;
                    foreach (ushort id in held)
                    {
                        buffers.Return(id);
                    }

                    held.Clear();
                    Arm(ring, b, buffers.GroupId, bundle: false);
                    rearms++;
                    continue;
                }

                Assert.True(cqe.Res > 0, $"recv failed: {cqe.Res}");
                Assert.True(cqe.HasBuffer);
                received.AddRange(buffers.GetSpan(cqe.BufferId, cqe.Res).ToArray());
                held.Add(cqe.BufferId); // hold the buffer, as a slow application would
                if (!cqe.HasMore)
                {
                    Arm(ring, b, buffers.GroupId, bundle: false);
                }
            }

            Assert.True(enobufs > 0, "4 buffers of 64 bytes should have run dry on 5000 bytes");
            Assert.True(rearms > 0);
            Assert.Equal(payload, received.ToArray());
        }
        finally
        {
            Libc.Close(a);
            Libc.Close(b);
        }
    }

    [Fact]
    public void MultishotRecvReportsEndOfStream()
    {
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            using var buffers = BufferRing.Create(ring, groupId: 1, count: 8, bufferSize: 128);
            Arm(ring, b, buffers.GroupId, bundle: false);
            WriteAll(a, "hello"u8);
            Libc.Close(a);
            a = -1;
            Cqe data = WaitCqe(ring);
            Assert.Equal(5, data.Res);
            Assert.True(buffers.GetSpan(data.BufferId, 5).SequenceEqual("hello"u8));
            Cqe eof = WaitCqe(ring);
            Assert.Equal(0, eof.Res);
            Assert.False(eof.HasMore);
        }
        finally
        {
            if (a >= 0)
            {
                Libc.Close(a);
            }

            Libc.Close(b);
        }
    }

    [Fact]
    public void BundleRecvCoversSeveralBuffersInOrder()
    {
        using (var probeRing = IoUring.Ring.Create())
        {
            RequireFeature((probeRing.Features & IoUringConstants.Features.RecvSendBundle) != 0, "IORING_FEAT_RECVSEND_BUNDLE", new Version(6, 10));
        }

        // TCP, as the transport receives: before Linux 6.17 or so a bundle is sized by the bytes
        // the socket reports queued, which an AF_UNIX socket does not report (seen on 6.12: one
        // buffer per completion there).
        (Socket server, Socket client) = TcpPair();
        using (server)
        using (client)
        {
            int b = (int)server.Handle;
            using var ring = IoUring.Ring.Create();
            using var buffers = BufferRing.Create(ring, groupId: 9, count: 64, bufferSize: 256);
            byte[] payload = Pattern(8000, 6);
            client.Send(payload); // data first, so one receive finds it all waiting
            // No event says the loopback delivered every byte.
            Until(() => server.Available >= payload.Length, () => $"only {server.Available} of {payload.Length} bytes arrived");

            Arm(ring, b, buffers.GroupId, bundle: true);

            var received = new List<byte>();
            int maxBuffersInOneCqe = 0;
            Span<ushort> ids = stackalloc ushort[64];
            while (received.Count < payload.Length)
            {
                Cqe cqe = WaitCqe(ring);
                Assert.True(cqe.Res > 0, $"recv failed: {cqe.Res}");
                int count = buffers.GetBundleBufferIds(cqe.BufferId, cqe.Res, ids);
                maxBuffersInOneCqe = Math.Max(maxBuffersInOneCqe, count);
                int left = cqe.Res;
                for (int i = 0; i < count; i++)
                {
                    int take = Math.Min(left, buffers.BufferSize);
                    received.AddRange(buffers.GetSpan(ids[i], take).ToArray());
                    left -= take;
                    buffers.Return(ids[i]);
                }

                if (!cqe.HasMore)
                {
                    Arm(ring, b, buffers.GroupId, bundle: true);
                }
            }

            Assert.True(maxBuffersInOneCqe > 1, "a bundle should have filled more than one buffer");
            Assert.Equal(payload, received.ToArray());
        }
    }

    [Fact]
    public void BufferRingRejectsCountsThatAreNotAPowerOfTwo()
    {
        using var ring = IoUring.Ring.Create();
        Assert.Throws<ArgumentOutOfRangeException>(() => BufferRing.Create(ring, 1, 3, 64));
        Assert.Throws<ArgumentOutOfRangeException>(() => BufferRing.Create(ring, 1, 65536, 64));
    }

    [Fact]
    public void ABufferGroupCanBeReregisteredAfterDispose()
    {
        using var ring = IoUring.Ring.Create();
        BufferRing.Create(ring, 5, 8, 64).Dispose();
        using var again = BufferRing.Create(ring, 5, 8, 64);
        Assert.Equal(5, again.GroupId);
        var ex = Assert.Throws<IoUringException>(() => BufferRing.Create(ring, 5, 8, 64));
        Assert.Equal(Errno.EEXIST, ex.Errno);
    }

    /// <summary>
    /// What the transport relies on for Unix sockets (IoUringConnection.Receive.cs): a single
    /// receive armed after the data was taken looks at the socket again and reports the end that
    /// came with the data. Both are in the socket before the first receive is armed, and
    /// IORING_RECVSEND_POLL_FIRST has the kernel take them from one readiness: the order in which
    /// a multishot receive on AF_UNIX reports the data and then waits for a wake-up that never
    /// comes (seen on Linux 6.18 and 7.2; 6.1 and 6.12 report the end).
    /// </summary>
    [Fact]
    public void ASingleReceiveOnAfUnixReportsAnEndThatCameWithTheData()
    {
        (int a, int b) = SocketPair();
        try
        {
            using var ring = IoUring.Ring.Create();
            using var buffers = BufferRing.Create(ring, groupId: 1, count: 8, bufferSize: 128);
            WriteAll(a, "unix"u8);
            using (var peer = new Socket(new SafeSocketHandle(a, ownsHandle: false)))
            {
                peer.Shutdown(SocketShutdown.Send);
            }

            ArmSingle(ring, b, buffers.GroupId);
            Cqe data = WaitCqe(ring);
            Assert.Equal(4, data.Res);
            Assert.False(data.HasMore);
            Assert.True(buffers.GetSpan(data.BufferId, 4).SequenceEqual("unix"u8));

            ArmSingle(ring, b, buffers.GroupId);
            Cqe end = WaitCqe(ring);
            Assert.Equal(0, end.Res);
        }
        finally
        {
            Libc.Close(a);
            Libc.Close(b);
        }
    }

    /// <summary>
    /// The same order on TCP, where the transport keeps its multishot receives: TCP reports one
    /// byte left at a FIN (tcp_inq_hint), so the multishot receive tries again after the data and
    /// reads the end.
    /// </summary>
    [Fact]
    public void AMultishotReceiveOnTcpReportsAnEndThatCameWithTheData()
    {
        (Socket server, Socket client) = TcpPair();
        using (server)
        using (client)
        {
            using var ring = IoUring.Ring.Create();
            using var buffers = BufferRing.Create(ring, groupId: 1, count: 8, bufferSize: 128);
            client.Send("tcp!"u8);
            client.Shutdown(SocketShutdown.Send);
            Until(() => server.Poll(0, SelectMode.SelectRead) && server.Available == 4, () => "the data did not reach the server's socket");

            Sqe* sqe = ring.GetSqe();
            sqe->PrepRecvMultishotSelect((int)server.SafeHandle.DangerousGetHandle(), buffers.GroupId, bundle: false);
            sqe->SetPollFirst();
            sqe->UserData = 77;
            Cqe data = WaitCqe(ring);
            Assert.Equal(4, data.Res);
            Assert.True(data.HasMore);
            Cqe end = WaitCqe(ring);
            Assert.Equal(0, end.Res);
            Assert.False(end.HasMore);
        }
    }

    private static void ArmSingle(IoUring.Ring ring, int fd, ushort group)
    {
        Sqe* sqe = ring.GetSqe();
        sqe->PrepRecvSelect(fd, group);
        sqe->SetPollFirst();
        sqe->UserData = 78;
        ring.Submit();
    }

    private static void Arm(IoUring.Ring ring, int fd, ushort group, bool bundle)
    {
        Sqe* sqe = ring.GetSqe();
        sqe->PrepRecvMultishotSelect(fd, group, bundle);
        sqe->UserData = 77;
        ring.Submit();
    }
}
