using System;
using System.Buffers.Binary;
using System.Linq;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using IoUring.Sockets;
using Xunit;

namespace IoUring.Tests.Sockets;

public class SocketAddressMarshalTests
{
    [Theory]
    [InlineData("127.0.0.1", 80)]
    [InlineData("0.0.0.0", 0)]
    [InlineData("255.255.255.255", 65535)]
    [InlineData("10.1.2.3", 8080)]
    public void IPv4_WritesSockaddrInAndReadsItBack(string address, int port)
    {
        var endPoint = new IPEndPoint(IPAddress.Parse(address), port);

        byte[] bytes = SocketTestHelpers.ToSockAddrBytes(endPoint);

        Assert.Equal(16, bytes.Length);
        Assert.Equal(SocketInterop.AF_INET, BitConverter.ToUInt16(bytes, 0));
        Assert.Equal(port, BinaryPrimitives.ReadUInt16BigEndian(bytes.AsSpan(2)));
        Assert.Equal(endPoint.Address.GetAddressBytes(), bytes[4..8]);
        Assert.All(bytes[8..16], b => Assert.Equal(0, b));
        Assert.Equal(endPoint, SocketAddressMarshal.Read(bytes, bytes.Length));
    }

    [Theory]
    [InlineData("::1", 443, 0)]
    [InlineData("fe80::1", 8443, 7)]
    [InlineData("::ffff:127.0.0.1", 1, 0)]
    [InlineData("2001:db8::42", 65535, 0)]
    public void IPv6_WritesSockaddrIn6WithScopeIdAndReadsItBack(string address, int port, long scopeId)
    {
        var endPoint = new IPEndPoint(new IPAddress(IPAddress.Parse(address).GetAddressBytes(), scopeId), port);

        byte[] bytes = SocketTestHelpers.ToSockAddrBytes(endPoint);

        Assert.Equal(28, bytes.Length);
        Assert.Equal(SocketInterop.AF_INET6, BitConverter.ToUInt16(bytes, 0));
        Assert.Equal(port, BinaryPrimitives.ReadUInt16BigEndian(bytes.AsSpan(2)));
        Assert.Equal(0u, BitConverter.ToUInt32(bytes, 4)); // flow info: IPEndPoint has none
        Assert.Equal(endPoint.Address.GetAddressBytes(), bytes[8..24]);
        Assert.Equal((uint)scopeId, BitConverter.ToUInt32(bytes, 24));

        var read = Assert.IsType<IPEndPoint>(SocketAddressMarshal.Read(bytes, bytes.Length));
        Assert.Equal(endPoint, read);
        Assert.Equal(scopeId, read.Address.ScopeId);
    }

    [Fact]
    public void IPv6_FlowInfoFromTheKernelIsIgnoredOnRead()
    {
        byte[] bytes = SocketTestHelpers.ToSockAddrBytes(new IPEndPoint(IPAddress.IPv6Loopback, 9));
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(4), 0x000ABCDE);

        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, 9), SocketAddressMarshal.Read(bytes, bytes.Length));
    }

    [Fact]
    public void UnixPath_WritesPathWithTerminatorAndReadsItBack()
    {
        const string Path = "/run/app/kestrel.sock";
        var endPoint = new UnixDomainSocketEndPoint(Path);

        byte[] bytes = SocketTestHelpers.ToSockAddrBytes(endPoint);

        Assert.Equal(2 + Path.Length + 1, bytes.Length);
        Assert.Equal(SocketInterop.AF_UNIX, BitConverter.ToUInt16(bytes, 0));
        Assert.Equal(Path, Encoding.ASCII.GetString(bytes, 2, Path.Length));
        Assert.Equal(0, bytes[^1]);
        Assert.Equal(endPoint, SocketAddressMarshal.Read(bytes, bytes.Length));
    }

    [Fact]
    public void UnixPath_IsEncodedAsUtf8()
    {
        const string Path = "/tmp/sökét-é.sock";
        byte[] bytes = SocketTestHelpers.ToSockAddrBytes(new UnixDomainSocketEndPoint(Path));

        Assert.Equal(Encoding.UTF8.GetBytes(Path), bytes[2..^1]);
        Assert.Equal(new UnixDomainSocketEndPoint(Path), SocketAddressMarshal.Read(bytes, bytes.Length));
    }

    [Fact]
    public void UnixPath_ReadStopsAtTheFirstNulWhateverTheLength()
    {
        byte[] bytes = new byte[110];
        BitConverter.TryWriteBytes(bytes, (ushort)SocketInterop.AF_UNIX);
        Encoding.ASCII.GetBytes("/tmp/a.sock").CopyTo(bytes, 2);

        Assert.Equal(new UnixDomainSocketEndPoint("/tmp/a.sock"), SocketAddressMarshal.Read(bytes, 110));
    }

    [Fact]
    public void AbstractName_LengthCoversTheNameOnlyAndReadsBack()
    {
        const string Name = "\0kestrel-abstract";
        var endPoint = new UnixDomainSocketEndPoint(Name);

        byte[] bytes = SocketTestHelpers.ToSockAddrBytes(endPoint);

        // offsetof(sun_path) + name length, no terminator and not the full 110.
        Assert.Equal(2 + Name.Length, bytes.Length);
        Assert.Equal(0, bytes[2]);
        Assert.Equal("kestrel-abstract", Encoding.ASCII.GetString(bytes, 3, bytes.Length - 3));

        var read = Assert.IsType<UnixDomainSocketEndPoint>(SocketAddressMarshal.Read(bytes, bytes.Length));
        Assert.Equal(endPoint, read);
        Assert.Equal("@kestrel-abstract", read.ToString());
    }

    [Fact]
    public void RelativePathStartingWithAt_IsAFileNotAnAbstractName()
    {
        byte[] bytes = SocketTestHelpers.ToSockAddrBytes(new UnixDomainSocketEndPoint("@relative.sock"));

        Assert.Equal((byte)'@', bytes[2]);
        Assert.Equal(2 + "@relative.sock".Length + 1, bytes.Length);
        Assert.Equal(new UnixDomainSocketEndPoint("@relative.sock"), SocketAddressMarshal.Read(bytes, bytes.Length));
    }

    [Fact]
    public void LongestNamesDotNetAccepts_FillSunPathExactly()
    {
        // .NET already refuses longer names in the UnixDomainSocketEndPoint constructor; these are the limits.
        byte[] path = SocketTestHelpers.ToSockAddrBytes(new UnixDomainSocketEndPoint("/" + new string('p', 106)));
        byte[] name = SocketTestHelpers.ToSockAddrBytes(new UnixDomainSocketEndPoint("\0" + new string('a', 107)));

        Assert.Equal(110, path.Length);
        Assert.Equal(0, path[^1]);
        Assert.Equal(110, name.Length);
        Assert.Equal((byte)'a', name[^1]);
    }

    [Fact]
    public void Write_RejectsADestinationTooSmallForTheAddress()
    {
        byte[] small = new byte[20];

        Assert.Throws<ArgumentException>(() => SocketAddressMarshal.Write(new IPEndPoint(IPAddress.IPv6Loopback, 1), small));
        Assert.Throws<ArgumentException>(() => SocketAddressMarshal.Write(new UnixDomainSocketEndPoint("/tmp/" + new string('x', 40)), small));
    }

    [Fact]
    public void Write_RejectsEndPointsWithoutAKernelAddress()
    {
        byte[] buffer = new byte[SocketAddressMarshal.MaxLength];

        var error = Assert.Throws<ArgumentException>(() => SocketAddressMarshal.Write(new DnsEndPoint("localhost", 80), buffer));
        Assert.Contains("DnsEndPoint", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void UnnamedUnixSocket_ReadsAsTheEndPointDotNetReports()
    {
        string path = SocketTestHelpers.CreateUnixSocketPath();
        try
        {
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen();
            using Socket client = SocketTestHelpers.CreateClient(AddressFamily.Unix);
            client.Connect(new UnixDomainSocketEndPoint(path));

            byte[] kernelBytes = SocketTestHelpers.GetSockNameBytes(SocketTestHelpers.Fd(client));
            EndPoint read = SocketAddressMarshal.Read(kernelBytes, kernelBytes.Length);

            Assert.Equal(2, kernelBytes.Length); // the kernel reports just the family
            Assert.Equal(client.LocalEndPoint, read);
            Assert.Equal(string.Empty, read.ToString());
            Assert.True(SocketAddressMarshal.IsUnnamed(read));
            Assert.Equal(2, SocketTestHelpers.ToSockAddrBytes(read).Length);
        }
        finally
        {
            SocketTestHelpers.DeleteQuietly(path);
        }
    }

    [Fact]
    public void TryRead_RefusesUnknownFamiliesAndTruncatedAddresses()
    {
        byte[] netlink = new byte[12];
        BitConverter.TryWriteBytes(netlink, (ushort)16); // AF_NETLINK
        byte[] inet = SocketTestHelpers.ToSockAddrBytes(new IPEndPoint(IPAddress.Loopback, 80));

        Assert.False(SocketAddressMarshal.TryRead(netlink, netlink.Length, out _));
        Assert.Throws<ArgumentException>(() => SocketAddressMarshal.Read(netlink, netlink.Length));
        Assert.False(SocketAddressMarshal.TryRead(inet, 8, out _));
        Assert.False(SocketAddressMarshal.TryRead(inet, 1, out _));
        Assert.False(SocketAddressMarshal.TryRead(inet, SocketAddressMarshal.MaxLength, out _)); // longer than the buffer
    }

    public static TheoryData<string> KernelBoundEndPoints() => new() { "ipv4", "ipv6", "ipv6-link-local", "unix-path", "unix-abstract" };

    // .NET binds a socket; the bytes the kernel then reports from getsockname must be exactly the bytes
    // we write for .NET's LocalEndPoint, and reading the fd through LinuxSocket must give .NET's answer.
    [Theory]
    [MemberData(nameof(KernelBoundEndPoints))]
    public void WrittenBytesMatchTheKernelsForASocketBoundByDotNet(string kind)
    {
        string? path = null;
        EndPoint bindTo;
        AddressFamily family;
        switch (kind)
        {
            case "ipv4":
                (bindTo, family) = (new IPEndPoint(IPAddress.Loopback, 0), AddressFamily.InterNetwork);
                break;
            case "ipv6":
                (bindTo, family) = (new IPEndPoint(IPAddress.IPv6Loopback, 0), AddressFamily.InterNetworkV6);
                break;
            case "ipv6-link-local":
                IPAddress? linkLocal = FindLinkLocalAddress();
                if (linkLocal is null)
                {
                    Assert.Skip("No interface has an IPv6 link-local address.");
                }

                (bindTo, family) = (new IPEndPoint(linkLocal, 0), AddressFamily.InterNetworkV6);
                break;
            case "unix-path":
                path = SocketTestHelpers.CreateUnixSocketPath();
                (bindTo, family) = (new UnixDomainSocketEndPoint(path), AddressFamily.Unix);
                break;
            default:
                (bindTo, family) = (new UnixDomainSocketEndPoint(SocketTestHelpers.CreateAbstractName()), AddressFamily.Unix);
                break;
        }

        try
        {
            using var socket = new Socket(family, SocketType.Stream, family == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
            socket.Bind(bindTo);
            int fd = SocketTestHelpers.Fd(socket);

            byte[] kernelBytes = SocketTestHelpers.GetSockNameBytes(fd);
            byte[] ourBytes = SocketTestHelpers.ToSockAddrBytes(socket.LocalEndPoint!);

            Assert.Equal(kernelBytes, ourBytes);
            Assert.Equal(socket.LocalEndPoint, LinuxSocket.GetLocalEndPoint(fd));
            if (kind == "ipv6-link-local")
            {
                Assert.NotEqual(0, ((IPEndPoint)LinuxSocket.GetLocalEndPoint(fd)!).Address.ScopeId);
            }
        }
        finally
        {
            if (path is not null)
            {
                SocketTestHelpers.DeleteQuietly(path);
            }
        }
    }

    private static IPAddress? FindLinkLocalAddress() =>
        NetworkInterface.GetAllNetworkInterfaces()
            .Where(nic => nic.OperationalStatus == OperationalStatus.Up)
            .SelectMany(nic => nic.GetIPProperties().UnicastAddresses)
            .Select(unicast => unicast.Address)
            .FirstOrDefault(address => address.IsIPv6LinkLocal && address.ScopeId != 0);
}
