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

    private static void Arm(IoUring.Ring ring, int fd, ushort group, bool bundle)
    {
        Sqe* sqe = ring.GetSqe();
        sqe->PrepRecvMultishotSelect(fd, group, bundle);
        sqe->UserData = 77;
        ring.Submit();
    }
}
