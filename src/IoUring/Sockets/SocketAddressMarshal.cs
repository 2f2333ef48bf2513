using System;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace IoUring.Sockets;

// Converts between EndPoint objects and the sockaddr bytes bind/connect take and
// accept4/getsockname/getpeername return. The bytes are written field by field rather than through
// SocketAddress/EndPoint.Serialize so the layout is visible here and IP endpoints are written without
// allocating.
//
// Layouts (Linux x86_64; the family is always a native-endian u16 at offset 0, ports and IPv4/IPv6
// addresses are in network byte order):
//   struct sockaddr_in   16 bytes: 0 sin_family u16, 2 sin_port u16 BE, 4 sin_addr[4], 8 sin_zero[8]
//   struct sockaddr_in6  28 bytes: 0 sin6_family u16, 2 sin6_port u16 BE, 4 sin6_flowinfo u32 BE,
//                                  8 sin6_addr[16], 24 sin6_scope_id u32 native-endian
//   struct sockaddr_un  110 bytes: 0 sun_family u16, 2 sun_path[108]
//   struct sockaddr_storage 128 bytes: large enough for any of the above.
internal static class SocketAddressMarshal
{
    public const int MaxLength = 128;

    public const int SockAddrInLength = 16;
    public const int SockAddrIn6Length = 28;
    public const int SockAddrUnLength = 110;

    private const int FamilyOffset = 0;
    private const int PortOffset = 2;
    private const int In4AddressOffset = 4;
    private const int In6AddressOffset = 8;
    private const int In6ScopeIdOffset = 24;
    private const int SunPathOffset = 2;
    private const int SunPathLength = SockAddrUnLength - SunPathOffset;

    // UnixDomainSocketEndPoint's public constructor rejects an empty path, yet the kernel reports an
    // unnamed socket (every connecting client that did not bind, so the remote end of every accepted
    // Unix connection) as a bare 2-byte family. .NET's own Socket.LocalEndPoint/RemoteEndPoint return a
    // UnixDomainSocketEndPoint whose path is "" in that case, and the only public way to obtain that
    // instance is EndPoint.Create from a 2-byte AF_UNIX SocketAddress. It is built once here (no address
    // bytes are marshalled through it) and shared, since the type is immutable.
    private static readonly UnixDomainSocketEndPoint s_unnamed =
        (UnixDomainSocketEndPoint)new UnixDomainSocketEndPoint("/").Create(new SocketAddress(AddressFamily.Unix, SunPathOffset));

    // Strict: a path that cannot be encoded is an error on the way in, not a silently altered name.
    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    // The representation of an unnamed Unix socket; equal (Equals) to what .NET reports for one.
    public static UnixDomainSocketEndPoint UnnamedUnixEndPoint => s_unnamed;

    public static bool IsUnnamed(EndPoint endPoint) => endPoint is UnixDomainSocketEndPoint unix && unix.Equals(s_unnamed);

    // Writes endPoint as a sockaddr into destination and returns the length to pass to bind/connect.
    // destination must hold the whole structure (MaxLength is always enough).
    public static int Write(EndPoint endPoint, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        return endPoint switch
        {
            IPEndPoint ip when ip.AddressFamily == AddressFamily.InterNetwork => WriteInet(ip, destination),
            IPEndPoint ip when ip.AddressFamily == AddressFamily.InterNetworkV6 => WriteInet6(ip, destination),
            UnixDomainSocketEndPoint unix => WriteUnix(unix, destination),
            _ => throw new ArgumentException(
                $"Cannot marshal a {endPoint.GetType().Name} ({endPoint.AddressFamily}); only IPv4/IPv6 IPEndPoint and UnixDomainSocketEndPoint are supported (resolve a DnsEndPoint first).",
                nameof(endPoint)),
        };
    }

    // The reverse of Write for what the kernel returns. Throws ArgumentException for a family it does not
    // model or a length too short for the family.
    public static EndPoint Read(ReadOnlySpan<byte> sockaddr, int length)
    {
        if (!TryRead(sockaddr, length, out EndPoint? endPoint))
        {
            ushort family = sockaddr.Length >= sizeof(ushort) ? ReadFamily(sockaddr) : (ushort)0;
            throw new ArgumentException($"Cannot read a sockaddr of family {family} and length {length}.", nameof(sockaddr));
        }

        return endPoint;
    }

    public static bool TryRead(ReadOnlySpan<byte> sockaddr, int length, [NotNullWhen(true)] out EndPoint? endPoint)
    {
        endPoint = null;

        // The kernel reports the full size of the address even when it truncated it to the buffer, so a
        // length beyond the buffer means bytes are missing.
        if (length < sizeof(ushort) || length > sockaddr.Length)
        {
            return false;
        }

        sockaddr = sockaddr[..length];
        switch (ReadFamily(sockaddr))
        {
            case SocketInterop.AF_INET when length >= SockAddrInLength:
                endPoint = new IPEndPoint(
                    new IPAddress(sockaddr.Slice(In4AddressOffset, 4)),
                    BinaryPrimitives.ReadUInt16BigEndian(sockaddr[PortOffset..]));
                return true;

            case SocketInterop.AF_INET6 when length >= SockAddrIn6Length:
                // sin6_flowinfo is dropped: IPEndPoint has no flow label, and .NET ignores it as well.
                uint scopeId = MemoryMarshal.Read<uint>(sockaddr[In6ScopeIdOffset..]);
                endPoint = new IPEndPoint(
                    new IPAddress(sockaddr.Slice(In6AddressOffset, 16), scopeId),
                    BinaryPrimitives.ReadUInt16BigEndian(sockaddr[PortOffset..]));
                return true;

            case SocketInterop.AF_UNIX:
                endPoint = ReadUnix(sockaddr[SunPathOffset..]);
                return endPoint is not null;

            default:
                return false;
        }
    }

    private static ushort ReadFamily(ReadOnlySpan<byte> sockaddr) => MemoryMarshal.Read<ushort>(sockaddr[FamilyOffset..]);

    private static void WriteFamily(Span<byte> destination, int family) =>
        MemoryMarshal.Write(destination[FamilyOffset..], (ushort)family);

    private static int WriteInet(IPEndPoint ip, Span<byte> destination)
    {
        Span<byte> sockaddr = Slice(destination, SockAddrInLength);
        sockaddr.Clear(); // sin_zero must be zero
        WriteFamily(sockaddr, SocketInterop.AF_INET);
        BinaryPrimitives.WriteUInt16BigEndian(sockaddr[PortOffset..], (ushort)ip.Port);
        WriteAddress(ip.Address, sockaddr.Slice(In4AddressOffset, 4));
        return SockAddrInLength;
    }

    private static int WriteInet6(IPEndPoint ip, Span<byte> destination)
    {
        Span<byte> sockaddr = Slice(destination, SockAddrIn6Length);
        sockaddr.Clear(); // sin6_flowinfo (offset 4) stays 0: IPEndPoint carries no flow label
        WriteFamily(sockaddr, SocketInterop.AF_INET6);
        BinaryPrimitives.WriteUInt16BigEndian(sockaddr[PortOffset..], (ushort)ip.Port);
        WriteAddress(ip.Address, sockaddr.Slice(In6AddressOffset, 16));
        MemoryMarshal.Write(sockaddr[In6ScopeIdOffset..], (uint)ip.Address.ScopeId);
        return SockAddrIn6Length;
    }

    private static void WriteAddress(IPAddress address, Span<byte> destination)
    {
        if (!address.TryWriteBytes(destination, out int written) || written != destination.Length)
        {
            throw new ArgumentException($"Address {address} does not fit a {destination.Length}-byte field.", nameof(address));
        }
    }

    // Filesystem path: sun_path holds the UTF-8 path plus a terminating NUL, and the length is
    // offsetof(sun_path) + strlen + 1, which is what the kernel hands back from getsockname (and what
    // .NET passes). Abstract name (.NET spells it as a path starting with '\0'): sun_path holds the
    // leading NUL and the name with no terminator, and the length must be offsetof(sun_path) + name
    // length exactly, because every byte up to the length is part of the name. Unnamed: just the family.
    private static int WriteUnix(UnixDomainSocketEndPoint unix, Span<byte> destination)
    {
        string path = GetPath(unix);
        if (path.Length == 0)
        {
            // Binding this asks the kernel to autobind a random abstract name.
            WriteFamily(Slice(destination, SunPathOffset), SocketInterop.AF_UNIX);
            return SunPathOffset;
        }

        bool isAbstract = path[0] == '\0';
        if (!isAbstract && path.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException($"The Unix socket path '{unix}' contains a NUL character.", nameof(unix));
        }

        int byteCount = s_strictUtf8.GetByteCount(path);
        int needed = isAbstract ? byteCount : byteCount + 1;
        if (needed > SunPathLength)
        {
            throw new ArgumentException(
                $"The Unix socket {(isAbstract ? "abstract name" : "path")} '{unix}' is {byteCount} bytes in UTF-8; sun_path holds {SunPathLength} bytes{(isAbstract ? "" : " including the terminating NUL")}.",
                nameof(unix));
        }

        int length = SunPathOffset + needed;
        Span<byte> sockaddr = Slice(destination, length);
        WriteFamily(sockaddr, SocketInterop.AF_UNIX);
        s_strictUtf8.GetBytes(path, sockaddr[SunPathOffset..]);
        if (!isAbstract)
        {
            sockaddr[length - 1] = 0;
        }

        return length;
    }

    private static UnixDomainSocketEndPoint? ReadUnix(ReadOnlySpan<byte> sunPath)
    {
        if (sunPath.IsEmpty)
        {
            return s_unnamed;
        }

        string path;
        if (sunPath[0] == 0)
        {
            // Abstract: every byte is significant, embedded NULs included (invalid UTF-8 becomes U+FFFD).
            path = Encoding.UTF8.GetString(sunPath);
        }
        else
        {
            // Filesystem path: the kernel may or may not count the terminator in the length (getsockname
            // does); the name ends at the first NUL either way.
            int end = sunPath.IndexOf((byte)0);
            path = Encoding.UTF8.GetString(end < 0 ? sunPath : sunPath[..end]);
        }

        // The kernel accepts a 108-byte path without a terminator, and invalid UTF-8 in an abstract name
        // grows when decoded; UnixDomainSocketEndPoint rejects names whose UTF-8 form exceeds sun_path
        // (less the terminator for paths), so such a name, bound by some other program, has no .NET form.
        int limit = path[0] == '\0' ? SunPathLength : SunPathLength - 1;
        if (Encoding.UTF8.GetByteCount(path) > limit)
        {
            return null;
        }

        return new UnixDomainSocketEndPoint(path);
    }

    // UnixDomainSocketEndPoint exposes its path only through ToString, which shows an abstract name
    // with '@' in place of the leading NUL, so "@x" is either the abstract name "\0x" or a relative
    // file literally named "@x". Equals compares the underlying path, which settles it.
    private static string GetPath(UnixDomainSocketEndPoint unix)
    {
        string shown = unix.ToString();
        if (shown.Length > 0 && shown[0] == '@')
        {
            string asAbstract = string.Concat("\0", shown.AsSpan(1));
            if (unix.Equals(new UnixDomainSocketEndPoint(asAbstract)))
            {
                return asAbstract;
            }
        }

        return shown;
    }

    private static Span<byte> Slice(Span<byte> destination, int length)
    {
        if (destination.Length < length)
        {
            throw new ArgumentException($"The destination needs {length} bytes for this address but has {destination.Length}.", nameof(destination));
        }

        return destination[..length];
    }
}
