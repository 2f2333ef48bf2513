using System;
using System.Net;
using System.Net.Sockets;
using System.Text;
using IoUring.Sockets;
using Xunit;

namespace IoUring.Tests.Sockets;

public class LinuxSocketTests
{
    [Fact]
    public void IPv4ListenerOnPortZero_ReportsItsPortAndAcceptsADotNetClient()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: false));

        var local = Assert.IsType<IPEndPoint>(LinuxSocket.GetLocalEndPoint(listener.Fd));
        Assert.Equal(IPAddress.Loopback, local.Address);
        Assert.NotEqual(0, local.Port);

        using Socket client = SocketTestHelpers.CreateClient(AddressFamily.InterNetwork);
        client.Connect(local);
        using var accepted = new OwnedFd(SocketTestHelpers.AcceptPending(listener.Fd, out EndPoint? remote));

        Assert.Equal(client.LocalEndPoint, remote);
        Assert.Equal(client.LocalEndPoint, LinuxSocket.GetRemoteEndPoint(accepted.Fd));
        Assert.Equal(client.RemoteEndPoint, LinuxSocket.GetLocalEndPoint(accepted.Fd));
        Assert.True(LinuxSocket.IsStream(accepted.Fd));
        Assert.False(LinuxSocket.IsListening(accepted.Fd));

        // The kernel records the CPU that created the connection when the handshake completes.
        Assert.InRange(LinuxSocket.GetIncomingCpu(accepted.Fd), 0, int.MaxValue);
    }

    [Fact]
    public void Accept_ReturnsMinusOneWhenNoConnectionIsPending()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: false));

        Assert.Equal(-1, LinuxSocket.Accept(listener.Fd, out EndPoint? remote));
        Assert.Null(remote);
    }

    [Fact]
    public void AcceptedSocket_IsNonBlockingAndCloseOnExec()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: false));
        using Socket client = SocketTestHelpers.CreateClient(AddressFamily.InterNetwork);
        client.Connect(LinuxSocket.GetLocalEndPoint(listener.Fd)!);
        using var accepted = new OwnedFd(SocketTestHelpers.AcceptPending(listener.Fd, out _));

        // Nothing was sent, so a non-blocking receive reports "nothing yet" instead of blocking.
        Assert.Equal(-1, LinuxSocket.Receive(accepted.Fd, new byte[16]));
        Assert.Contains("FD_CLOEXEC", FdFlags(accepted.Fd), StringComparison.Ordinal);
    }

    [Fact]
    public void DualModeListener_AcceptsAnIPv4ClientAsAnIPv4MappedAddress()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.IPv6Any, 0), 16, reusePort: false));
        int port = ((IPEndPoint)LinuxSocket.GetLocalEndPoint(listener.Fd)!).Port;
        Assert.Equal(0, LinuxSocket.GetIntOption(listener.Fd, SocketInterop.IPPROTO_IPV6, SocketInterop.IPV6_V6ONLY));

        using Socket client = SocketTestHelpers.CreateClient(AddressFamily.InterNetwork);
        client.Connect(new IPEndPoint(IPAddress.Loopback, port));
        using var accepted = new OwnedFd(SocketTestHelpers.AcceptPending(listener.Fd, out EndPoint? remote));

        var clientLocal = (IPEndPoint)client.LocalEndPoint!;
        var expected = new IPEndPoint(clientLocal.Address.MapToIPv6(), clientLocal.Port);
        Assert.Equal(expected, remote);
        Assert.True(((IPEndPoint)remote!).Address.IsIPv4MappedToIPv6);

        // System.Net.Sockets reports the same endpoint for the same descriptor.
        using Socket adopted = SocketTestHelpers.Adopt(accepted.Fd);
        Assert.Equal(adopted.RemoteEndPoint, remote);
        Assert.Equal(adopted.LocalEndPoint, LinuxSocket.GetLocalEndPoint(accepted.Fd));
    }

    [Fact]
    public void IPv6LoopbackListener_AcceptsAnIPv6Client()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.IPv6Loopback, 0), 16, reusePort: false));
        var local = (IPEndPoint)LinuxSocket.GetLocalEndPoint(listener.Fd)!;
        Assert.Equal(IPAddress.IPv6Loopback, local.Address);

        using Socket client = SocketTestHelpers.CreateClient(AddressFamily.InterNetworkV6);
        client.Connect(local);
        using var accepted = new OwnedFd(SocketTestHelpers.AcceptPending(listener.Fd, out EndPoint? remote));

        Assert.Equal(client.LocalEndPoint, remote);
        Assert.Equal(AddressFamily.InterNetworkV6, LinuxSocket.GetAddressFamily(accepted.Fd));
    }

    [Fact]
    public void UnixPathListener_ReceivesBytesFromADotNetClient()
    {
        string path = SocketTestHelpers.CreateUnixSocketPath();
        try
        {
            var endPoint = new UnixDomainSocketEndPoint(path);
            using var listener = new OwnedFd(LinuxSocket.CreateListener(endPoint, 16, reusePort: false));
            Assert.Equal(endPoint, LinuxSocket.GetLocalEndPoint(listener.Fd));

            AssertUnixRoundTrip(listener.Fd, endPoint);
        }
        finally
        {
            SocketTestHelpers.DeleteQuietly(path);
        }
    }

    [Fact]
    public void AbstractListener_ReceivesBytesFromADotNetClient()
    {
        var endPoint = new UnixDomainSocketEndPoint(SocketTestHelpers.CreateAbstractName());
        using var listener = new OwnedFd(LinuxSocket.CreateListener(endPoint, 16, reusePort: false));
        Assert.Equal(endPoint, LinuxSocket.GetLocalEndPoint(listener.Fd));

        AssertUnixRoundTrip(listener.Fd, endPoint);
    }

    [Fact]
    public void UnixListener_DoesNotReplaceAStaleSocketFile()
    {
        string path = SocketTestHelpers.CreateUnixSocketPath();
        try
        {
            var endPoint = new UnixDomainSocketEndPoint(path);
            LinuxSocket.Close(LinuxSocket.CreateListener(endPoint, 16, reusePort: false)); // leaves the file behind

            var error = Assert.Throws<SocketException>(() => LinuxSocket.CreateListener(endPoint, 16, reusePort: false));
            Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
        }
        finally
        {
            SocketTestHelpers.DeleteQuietly(path);
        }
    }

    [Fact]
    public void ReusePortListeners_ShareAPort()
    {
        using var first = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: true));
        var endPoint = (IPEndPoint)LinuxSocket.GetLocalEndPoint(first.Fd)!;

        using var second = new OwnedFd(LinuxSocket.CreateListener(endPoint, 16, reusePort: true));

        Assert.Equal(endPoint, LinuxSocket.GetLocalEndPoint(second.Fd));
        Assert.Equal(1, LinuxSocket.GetIntOption(second.Fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_REUSEPORT));
    }

    [Fact]
    public void WithoutReusePort_SecondListenerOnThePortThrowsAddressAlreadyInUse()
    {
        using var first = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: false));
        var endPoint = (IPEndPoint)LinuxSocket.GetLocalEndPoint(first.Fd)!;

        var error = Assert.Throws<SocketException>(() => LinuxSocket.CreateListener(endPoint, 16, reusePort: false));

        // What Kestrel's bind code filters on before raising AddressInUseException.
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
        Assert.Equal(98, error.NativeErrorCode);
        Assert.Contains(endPoint.ToString(), error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReusePortWithoutReusePortOnTheFirstListener_ThrowsAddressAlreadyInUse()
    {
        using var first = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: false));
        var endPoint = (IPEndPoint)LinuxSocket.GetLocalEndPoint(first.Fd)!;

        var error = Assert.Throws<SocketException>(() => LinuxSocket.CreateListener(endPoint, 16, reusePort: true));
        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
    }

    [Fact]
    public void CreateListener_SetsReuseAddressOnTcpLikeDotNetBind()
    {
        using var ours = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: false));
        using var theirs = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        theirs.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        int dotNet = LinuxSocket.GetIntOption(SocketTestHelpers.Fd(theirs), SocketInterop.SOL_SOCKET, SocketInterop.SO_REUSEADDR);
        Assert.Equal(1, dotNet);
        Assert.Equal(dotNet, LinuxSocket.GetIntOption(ours.Fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_REUSEADDR));
        Assert.Equal(0, LinuxSocket.GetIntOption(ours.Fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_REUSEPORT));
    }

    [Fact]
    public void ReuseportCbpf_SteersConnectionsToTheChosenListener()
    {
        using var first = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: true));
        var endPoint = (IPEndPoint)LinuxSocket.GetLocalEndPoint(first.Fd)!;
        using var second = new OwnedFd(LinuxSocket.CreateListener(endPoint, 16, reusePort: true));

        // Index 1 of the group is the second listener (group order is the order the sockets joined).
        LinuxSocket.AttachReuseportCbpf(first.Fd, [SockFilter.ReturnConstant(1)]);

        for (int i = 0; i < 3; i++)
        {
            using Socket client = SocketTestHelpers.CreateClient(AddressFamily.InterNetwork);
            client.Connect(endPoint);
            using var accepted = new OwnedFd(SocketTestHelpers.AcceptPending(second.Fd, out EndPoint? remote));

            Assert.Equal(client.LocalEndPoint, remote);
            Assert.Equal(-1, LinuxSocket.Accept(first.Fd, out _));
        }

        LinuxSocket.DetachReuseportBpf(first.Fd);
        var error = Assert.Throws<SocketException>(() => LinuxSocket.DetachReuseportBpf(first.Fd));
        Assert.Contains("errno 2", error.Message, StringComparison.Ordinal); // ENOENT: nothing attached
    }

    [Fact]
    public void ReuseportCbpf_AcceptsTheCpuSteeringProgram()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: true));

        LinuxSocket.AttachReuseportCbpf(listener.Fd, [SockFilter.LoadCpu(), SockFilter.ReturnAccumulator()]);

        // With one socket in the group every CPU index past 0 falls back to the hash, so the connection lands here.
        using Socket client = SocketTestHelpers.CreateClient(AddressFamily.InterNetwork);
        client.Connect(LinuxSocket.GetLocalEndPoint(listener.Fd)!);
        using var accepted = new OwnedFd(SocketTestHelpers.AcceptPending(listener.Fd, out _));
    }

    [Fact]
    public void ReuseportCbpf_RejectsAnEmptyProgram()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: true));

        Assert.Throws<ArgumentException>(() => LinuxSocket.AttachReuseportCbpf(listener.Fd, ReadOnlySpan<SockFilter>.Empty));
    }

    [Fact]
    public void ShutdownSend_MakesTheDotNetPeerReadEndOfStream()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: false));
        using Socket client = SocketTestHelpers.CreateClient(AddressFamily.InterNetwork);
        client.Connect(LinuxSocket.GetLocalEndPoint(listener.Fd)!);
        using var accepted = new OwnedFd(SocketTestHelpers.AcceptPending(listener.Fd, out _));

        Assert.Equal(3, LinuxSocket.Send(accepted.Fd, "bye"u8));
        LinuxSocket.Shutdown(accepted.Fd, SocketShutdown.Send);

        byte[] buffer = new byte[16];
        Assert.Equal(3, client.Receive(buffer));
        Assert.Equal(0, client.Receive(buffer));

        // The other direction still works after a send-side shutdown.
        client.Send("still here"u8);
        SocketTestHelpers.WaitReadable(accepted.Fd);
        Assert.Equal(10, LinuxSocket.Receive(accepted.Fd, buffer));
    }

    [Fact]
    public void LingerZeroClose_MakesTheDotNetPeerSeeConnectionReset()
    {
        using var listener = new OwnedFd(LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 16, reusePort: false));
        using Socket client = SocketTestHelpers.CreateClient(AddressFamily.InterNetwork);
        client.Connect(LinuxSocket.GetLocalEndPoint(listener.Fd)!);
        int accepted = SocketTestHelpers.AcceptPending(listener.Fd, out _);

        LinuxSocket.SetLingerZero(accepted);
        LinuxSocket.Close(accepted);

        var error = Assert.Throws<SocketException>(() => client.Receive(new byte[16]));
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
    }

    [Fact]
    public void Connect_ReachesADotNetListenerAndReportsSuccess()
    {
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        server.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        server.Listen();
        using var fd = new OwnedFd(LinuxSocket.Create(AddressFamily.InterNetwork));

        bool connectedAtOnce = LinuxSocket.Connect(fd.Fd, server.LocalEndPoint!);
        if (!connectedAtOnce)
        {
            SocketTestHelpers.WaitWritable(fd.Fd);
        }

        using Socket accepted = server.Accept();
        Assert.Equal(SocketError.Success, LinuxSocket.GetSocketError(fd.Fd));
        Assert.Equal(server.LocalEndPoint, LinuxSocket.GetRemoteEndPoint(fd.Fd));
        Assert.Equal(accepted.RemoteEndPoint, LinuxSocket.GetLocalEndPoint(fd.Fd));
    }

    [Fact]
    public void Connect_ToAPortWithoutListener_ReportsConnectionRefused()
    {
        // A bound but not listening socket holds the port, so nothing else can start listening on it.
        using var holder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        holder.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var fd = new OwnedFd(LinuxSocket.Create(AddressFamily.InterNetwork));

        SocketError outcome;
        try
        {
            Assert.False(LinuxSocket.Connect(fd.Fd, holder.LocalEndPoint!));
            SocketTestHelpers.WaitWritable(fd.Fd);
            outcome = LinuxSocket.GetSocketError(fd.Fd);
        }
        catch (SocketException error)
        {
            outcome = error.SocketErrorCode; // the refusal may already be known when connect returns
        }

        Assert.Equal(SocketError.ConnectionRefused, outcome);
    }

    [Fact]
    public void Connect_ToAUnixListenerCompletesImmediately()
    {
        var endPoint = new UnixDomainSocketEndPoint(SocketTestHelpers.CreateAbstractName());
        using var listener = new OwnedFd(LinuxSocket.CreateListener(endPoint, 16, reusePort: false));
        using var client = new OwnedFd(LinuxSocket.Create(AddressFamily.Unix));

        Assert.True(LinuxSocket.Connect(client.Fd, endPoint));
        Assert.Equal(endPoint, LinuxSocket.GetRemoteEndPoint(client.Fd));
        Assert.True(SocketAddressMarshal.IsUnnamed(LinuxSocket.GetLocalEndPoint(client.Fd)!));
    }

    [Fact]
    public void GetRemoteEndPoint_OnAnUnconnectedSocketThrowsNotConnected()
    {
        using var fd = new OwnedFd(LinuxSocket.Create(AddressFamily.InterNetwork));

        var error = Assert.Throws<SocketException>(() => LinuxSocket.GetRemoteEndPoint(fd.Fd));
        Assert.Equal(SocketError.NotConnected, error.SocketErrorCode);
    }

    [Theory]
    [InlineData(AddressFamily.InterNetwork)]
    [InlineData(AddressFamily.InterNetworkV6)]
    [InlineData(AddressFamily.Unix)]
    public void AdoptedDotNetListener_ReportsFamilyStreamAndListening(AddressFamily family)
    {
        EndPoint endPoint = family switch
        {
            AddressFamily.InterNetwork => new IPEndPoint(IPAddress.Loopback, 0),
            AddressFamily.InterNetworkV6 => new IPEndPoint(IPAddress.IPv6Loopback, 0),
            _ => new UnixDomainSocketEndPoint(SocketTestHelpers.CreateAbstractName()),
        };
        using var socket = new Socket(family, SocketType.Stream, family == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
        socket.Bind(endPoint);
        int fd = SocketTestHelpers.Fd(socket);

        Assert.False(LinuxSocket.IsListening(fd));
        socket.Listen();

        Assert.Equal(family, LinuxSocket.GetAddressFamily(fd));
        Assert.True(LinuxSocket.IsStream(fd));
        Assert.True(LinuxSocket.IsListening(fd));
        Assert.Equal(socket.LocalEndPoint, LinuxSocket.GetLocalEndPoint(fd));
    }

    [Fact]
    public void IsStream_IsFalseForADatagramSocket()
    {
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);

        Assert.False(LinuxSocket.IsStream(SocketTestHelpers.Fd(udp)));
    }

    [Theory]
    [InlineData(AddressFamily.Unknown)]
    [InlineData(AddressFamily.AppleTalk)]
    [InlineData(AddressFamily.Packet)]
    public void Create_RejectsUnsupportedFamiliesClearly(AddressFamily family)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => LinuxSocket.Create(family));

        Assert.Equal("family", error.ParamName);
        Assert.Contains("InterNetworkV6", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CreateListener_RejectsEndPointsItCannotBind()
    {
        Assert.Throws<ArgumentException>(() => LinuxSocket.CreateListener(new DnsEndPoint("localhost", 80), 16, reusePort: false));

        var error = Assert.Throws<ArgumentException>(() =>
            LinuxSocket.CreateListener(new UnixDomainSocketEndPoint(SocketTestHelpers.CreateAbstractName()), 16, reusePort: true));
        Assert.Equal("reusePort", error.ParamName);
    }

    [Fact]
    public void Create_MakesNonBlockingCloseOnExecStreamSockets()
    {
        using var fd = new OwnedFd(LinuxSocket.Create(AddressFamily.InterNetworkV6));

        Assert.True(LinuxSocket.IsStream(fd.Fd));
        Assert.Equal(AddressFamily.InterNetworkV6, LinuxSocket.GetAddressFamily(fd.Fd));
        Assert.Contains("FD_CLOEXEC", FdFlags(fd.Fd), StringComparison.Ordinal);
        Assert.Contains("O_NONBLOCK", FdFlags(fd.Fd), StringComparison.Ordinal);
    }

    [Fact]
    public void Options_AreWrittenAndReadBack()
    {
        using var fd = new OwnedFd(LinuxSocket.Create(AddressFamily.InterNetworkV6));

        LinuxSocket.SetNoDelay(fd.Fd, true);
        LinuxSocket.SetKeepAlive(fd.Fd, true);
        LinuxSocket.SetReuseAddress(fd.Fd, true);
        LinuxSocket.SetReusePort(fd.Fd, true);
        LinuxSocket.SetDualMode(fd.Fd, false);

        Assert.NotEqual(0, LinuxSocket.GetIntOption(fd.Fd, SocketInterop.IPPROTO_TCP, SocketInterop.TCP_NODELAY));
        Assert.NotEqual(0, LinuxSocket.GetIntOption(fd.Fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_KEEPALIVE));
        Assert.NotEqual(0, LinuxSocket.GetIntOption(fd.Fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_REUSEADDR));
        Assert.NotEqual(0, LinuxSocket.GetIntOption(fd.Fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_REUSEPORT));
        Assert.Equal(1, LinuxSocket.GetIntOption(fd.Fd, SocketInterop.IPPROTO_IPV6, SocketInterop.IPV6_V6ONLY));

        LinuxSocket.SetNoDelay(fd.Fd, false);
        LinuxSocket.SetDualMode(fd.Fd, true);

        Assert.Equal(0, LinuxSocket.GetIntOption(fd.Fd, SocketInterop.IPPROTO_TCP, SocketInterop.TCP_NODELAY));
        Assert.Equal(0, LinuxSocket.GetIntOption(fd.Fd, SocketInterop.IPPROTO_IPV6, SocketInterop.IPV6_V6ONLY));
        Assert.Equal(SocketError.Success, LinuxSocket.GetSocketError(fd.Fd));
    }

    [Fact]
    public void InvalidOptions_ThrowSocketExceptionsWithTheMappedError()
    {
        using var unix = new OwnedFd(LinuxSocket.Create(AddressFamily.Unix));

        var error = Assert.Throws<SocketException>(() => LinuxSocket.SetReusePort(unix.Fd, true));
        Assert.Equal(SocketError.OperationNotSupported, error.SocketErrorCode);

        var badFd = Assert.Throws<SocketException>(() => LinuxSocket.GetIntOption(-1, SocketInterop.SOL_SOCKET, SocketInterop.SO_TYPE));
        Assert.Contains("errno 9", badFd.Message, StringComparison.Ordinal); // EBADF
    }

    private static void AssertUnixRoundTrip(int listenerFd, UnixDomainSocketEndPoint endPoint)
    {
        using Socket client = SocketTestHelpers.CreateClient(AddressFamily.Unix);
        client.Connect(endPoint);
        byte[] payload = Encoding.UTF8.GetBytes("hello over AF_UNIX");
        Assert.Equal(payload.Length, client.Send(payload));

        using var accepted = new OwnedFd(SocketTestHelpers.AcceptPending(listenerFd, out EndPoint? remote));

        // The client never bound, so both we and System.Net.Sockets see an unnamed peer.
        using Socket adopted = SocketTestHelpers.Adopt(accepted.Fd);
        Assert.Equal(client.LocalEndPoint, remote);
        Assert.Equal(adopted.RemoteEndPoint, remote);
        Assert.Equal(endPoint, LinuxSocket.GetLocalEndPoint(accepted.Fd));
        Assert.Equal(AddressFamily.Unix, LinuxSocket.GetAddressFamily(accepted.Fd));

        byte[] received = new byte[64];
        SocketTestHelpers.WaitReadable(accepted.Fd);
        int count = LinuxSocket.Receive(accepted.Fd, received);
        Assert.Equal(payload, received[..count]);

        client.Shutdown(SocketShutdown.Send);
        SocketTestHelpers.WaitReadable(accepted.Fd);
        Assert.Equal(0, LinuxSocket.Receive(accepted.Fd, received));
    }

    // /proc/self/fdinfo shows the file status flags in octal; translated to names for readable asserts.
    private static string FdFlags(int fd)
    {
        string flagsLine = Array.Find(System.IO.File.ReadAllLines($"/proc/self/fdinfo/{fd}"), line => line.StartsWith("flags:", StringComparison.Ordinal))!;
        int flags = Convert.ToInt32(flagsLine["flags:".Length..].Trim(), 8);
        var names = new StringBuilder();
        if ((flags & SocketInterop.SOCK_NONBLOCK) != 0)
        {
            names.Append("O_NONBLOCK ");
        }

        if ((flags & SocketInterop.SOCK_CLOEXEC) != 0)
        {
            names.Append("FD_CLOEXEC ");
        }

        return names.ToString();
    }
}
