using System;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using IoUring.Interop;
using IoUring.Sockets;
using Xunit;

namespace IoUring.Tests.Sockets;

// Shared plumbing for the socket tests. Readiness is awaited with poll(2) on the real descriptor so the
// tests wait for the kernel event they depend on instead of sleeping; the timeout only turns a bug into
// a failure rather than a hang.
internal static unsafe partial class SocketTestHelpers
{
    public const int ReadinessTimeoutMilliseconds = 10_000;

    private const short PollIn = 0x001;
    private const short PollOut = 0x004;

    public static void WaitReadable(int fd) => Wait(fd, PollIn, "readable");

    public static void WaitWritable(int fd) => Wait(fd, PollOut, "writable");

    // Accepts the connection the caller knows is on its way (the client's Connect has returned).
    public static int AcceptPending(int listenerFd, out EndPoint? remote)
    {
        WaitReadable(listenerFd);
        int accepted = LinuxSocket.Accept(listenerFd, out remote);
        Assert.True(accepted >= 0, "poll reported the listener readable but accept4 found no connection");
        return accepted;
    }

    // The raw sockaddr bytes the kernel reports for fd.
    public static byte[] GetSockNameBytes(int fd)
    {
        byte* buffer = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.MaxLength;
        Assert.Equal(0, SocketInterop.GetSockName(fd, buffer, &length));
        return new ReadOnlySpan<byte>(buffer, length).ToArray();
    }

    public static byte[] ToSockAddrBytes(EndPoint endPoint)
    {
        Span<byte> buffer = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.Write(endPoint, buffer);
        return buffer[..length].ToArray();
    }

    public static int Fd(Socket socket) => (int)socket.SafeHandle.DangerousGetHandle();

    // A .NET view of a descriptor we own, for comparing what System.Net.Sockets reports about it.
    public static Socket Adopt(int fd) => new(new SafeSocketHandle(fd, ownsHandle: false));

    // A blocking .NET client whose blocking calls fail instead of hanging if a test is wrong.
    public static Socket CreateClient(AddressFamily family) =>
        new(family, SocketType.Stream, family == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp)
        {
            ReceiveTimeout = ReadinessTimeoutMilliseconds,
            SendTimeout = ReadinessTimeoutMilliseconds,
        };

    public static string CreateUnixSocketPath() =>
        Path.Combine(Path.GetTempPath(), $"iouring-{Guid.NewGuid():N}.sock");

    public static string CreateAbstractName() => $"\0iouring-test-{Guid.NewGuid():N}";

    public static void DeleteQuietly(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }

    // Waits until at least one of fds is readable (a listener with a queued connection, say).
    public static void WaitAnyReadable(int first, int second)
    {
        PollFd* pollFds = stackalloc PollFd[2];
        pollFds[0] = new PollFd { Fd = first, Events = PollIn };
        pollFds[1] = new PollFd { Fd = second, Events = PollIn };
        int ready;
        do
        {
            ready = Poll(pollFds, 2, ReadinessTimeoutMilliseconds);
        }
        while (ready < 0 && Marshal.GetLastPInvokeError() == Errno.EINTR);

        Assert.True(ready > 0, $"neither fd {first} nor fd {second} became readable within {ReadinessTimeoutMilliseconds} ms (poll returned {ready})");
    }

    private static void Wait(int fd, short events, string what)
    {
        var pollFd = new PollFd { Fd = fd, Events = events };
        int ready;
        do
        {
            ready = Poll(&pollFd, 1, ReadinessTimeoutMilliseconds);
        }
        while (ready < 0 && Marshal.GetLastPInvokeError() == Errno.EINTR);

        Assert.True(ready > 0, $"fd {fd} did not become {what} within {ReadinessTimeoutMilliseconds} ms (poll returned {ready})");
    }

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(PollFd* fds, nuint count, int timeoutMilliseconds);
}
