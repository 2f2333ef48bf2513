using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using IoUring.Interop;
using Xunit;

namespace IoUring.Tests.Ring;

/// <summary>Shared plumbing for the ring tests: waiting for CQEs with a deadline, fd pairs, kernel version.</summary>
internal static unsafe class RingTestHelpers
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    /// <summary>The running kernel's version (Environment.OSVersion reports uname's release on Linux).</summary>
    public static Version Kernel => Environment.OSVersion.Version;

    /// <summary>Fails, rather than skips, when the kernel is new enough that a feature must be there.</summary>
    public static void RequireFeature(bool present, string feature, Version since)
    {
        if (present)
        {
            return;
        }

        Assert.True(Kernel < since, $"{feature} is missing although the kernel ({Kernel}) is {since} or later.");
        Assert.Skip($"The kernel ({Kernel}) lacks {feature} (Linux {since}).");
    }

    /// <summary>
    /// Polls <paramref name="condition"/> every millisecond until it holds, failing with
    /// <paramref name="failure"/> after <see cref="Deadline"/>: only for state no event reports
    /// (what the loopback has delivered, a thread's scheduler state).
    /// </summary>
    public static void Until(Func<bool> condition, Func<string> failure)
    {
        DateTime end = DateTime.UtcNow + Deadline;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < end, failure());
            Thread.Sleep(1);
        }
    }

    /// <summary>Submits and waits until a CQE is ready, failing the test after <see cref="Deadline"/>.</summary>
    public static Cqe WaitCqe(IoUring.Ring ring)
    {
        DateTime end = DateTime.UtcNow + Deadline;
        while (true)
        {
            if (ring.TryPeekCqe(out Cqe cqe))
            {
                ring.CqAdvance(1);
                return cqe;
            }

            TimeSpan left = end - DateTime.UtcNow;
            Assert.True(left > TimeSpan.Zero, "No completion arrived before the deadline.");
            int result = ring.SubmitAndWait(1, left);
            Assert.True(result >= 0 || result == -Errno.ETIME || result == -Errno.EINTR, $"io_uring_enter failed: {result}");
        }
    }

    /// <summary>Waits for <paramref name="count"/> CQEs.</summary>
    public static List<Cqe> WaitCqes(IoUring.Ring ring, int count)
    {
        var list = new List<Cqe>(count);
        while (list.Count < count)
        {
            list.Add(WaitCqe(ring));
        }

        return list;
    }

    /// <summary>A connected AF_UNIX stream socket pair (non-blocking off: tests write synchronously).</summary>
    public static (int A, int B) SocketPair()
    {
        int* fds = stackalloc int[2];
        const int AfUnix = 1, SockStream = 1, SockCloexec = 0x80000;
        Assert.Equal(0, Libc.SocketPair(AfUnix, SockStream | SockCloexec, 0, fds));
        return (fds[0], fds[1]);
    }

    public static void WriteAll(int fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                nint n = Libc.Write(fd, p + done, (nuint)(data.Length - done));
                Assert.True(n > 0, $"write failed: errno {Libc.LastErrno}");
                done += (int)n;
            }
        }
    }

    /// <summary>A connected TCP pair over loopback: (server side accepted, client).</summary>
    public static (Socket Server, Socket Client) TcpPair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        Socket server = listener.Accept();
        return (server, client);
    }

    public static byte[] Pattern(int length, int seed = 0)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}
