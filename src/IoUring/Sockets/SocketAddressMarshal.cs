using System;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace IoUring.Sockets;

/// <summary>
/// EndPoint to and from the kernel's sockaddr bytes. Layouts: sockaddr_in (16 bytes: u16 family,
/// be16 port, 4 address bytes, 8 zero), sockaddr_in6 (28 bytes: u16 family, be16 port, u32
/// flowinfo, 16 address bytes, u32 scope id), sockaddr_un (110 bytes: u16 family, 108 path bytes).
/// The family is native-endian, ports are big-endian.
/// </summary>
internal static class SocketAddressMarshal
{
    /// <summary>sizeof(struct sockaddr_storage).</summary>
    public const int MaxLength = 128;

    private const int SunPathOffset = 2;
    private const int SunPathLength = 108;

    /// <summary>Writes <paramref name="endPoint"/> as a sockaddr; returns the length to pass to bind/connect.</summary>
    public static int Write(EndPoint endPoint, Span<byte> destination)
    {
        destination[..MaxLength].Clear();
        switch (endPoint)
        {
            case IPEndPoint ip when ip.AddressFamily == AddressFamily.InterNetwork:
                BitConverter.TryWriteBytes(destination, (ushort)SocketInterop.AfInet);
                BinaryPrimitives.WriteUInt16BigEndian(destination[2..], (ushort)ip.Port);
                ip.Address.TryWriteBytes(destination.Slice(4, 4), out _);
                return 16;

            case IPEndPoint ip when ip.AddressFamily == AddressFamily.InterNetworkV6:
                BitConverter.TryWriteBytes(destination, (ushort)SocketInterop.AfInet6);
                BinaryPrimitives.WriteUInt16BigEndian(destination[2..], (ushort)ip.Port);
                ip.Address.TryWriteBytes(destination.Slice(8, 16), out _);
                BitConverter.TryWriteBytes(destination[24..], (uint)ip.Address.ScopeId);
                return 28;

            case UnixDomainSocketEndPoint unix:
            {
                // .NET spells an abstract name with a leading '\0'; the kernel takes exactly the
                // bytes given (no terminator), so the length is what marks its end.
                string path = unix.ToString();
                bool isAbstract = path.Length > 0 && path[0] == '\0';
                int byteCount = Encoding.UTF8.GetByteCount(path);
                if (byteCount > (isAbstract ? SunPathLength : SunPathLength - 1))
                {
                    throw new ArgumentException($"The Unix socket path is {byteCount} bytes; at most {SunPathLength - 1} fit.", nameof(endPoint));
                }

                BitConverter.TryWriteBytes(destination, (ushort)SocketInterop.AfUnix);
                Encoding.UTF8.GetBytes(path, destination[SunPathOffset..]);
                return isAbstract ? SunPathOffset + byteCount : SunPathOffset + byteCount + 1;
            }

            default:
                throw new NotSupportedException($"Endpoints of type {endPoint.GetType().Name} ({endPoint.AddressFamily}) are not supported.");
        }
    }

    /// <summary>Reads a sockaddr the kernel wrote; null for an unnamed Unix socket (nothing to name).</summary>
    public static EndPoint? Read(ReadOnlySpan<byte> sockaddr, int length)
    {
        int family = BitConverter.ToUInt16(sockaddr);
        switch (family)
        {
            case SocketInterop.AfInet:
                return new IPEndPoint(new IPAddress(sockaddr.Slice(4, 4)), BinaryPrimitives.ReadUInt16BigEndian(sockaddr[2..]));

            case SocketInterop.AfInet6:
            {
                uint scope = BitConverter.ToUInt32(sockaddr[24..]);
                return new IPEndPoint(new IPAddress(sockaddr.Slice(8, 16), scope), BinaryPrimitives.ReadUInt16BigEndian(sockaddr[2..]));
            }

            case SocketInterop.AfUnix:
            {
                int pathLength = length - SunPathOffset;
                if (pathLength <= 0)
                {
                    return null;
                }

                ReadOnlySpan<byte> path = sockaddr.Slice(SunPathOffset, pathLength);
                if (path[0] != 0)
                {
                    int end = path.IndexOf((byte)0);
                    path = end >= 0 ? path[..end] : path;
                }

                return new UnixDomainSocketEndPoint(Encoding.UTF8.GetString(path));
            }

            default:
                return null;
        }
    }
}
