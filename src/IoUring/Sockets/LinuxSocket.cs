using System;
using System.Net;
using System.Net.Sockets;
using IoUring.Interop;

namespace IoUring.Sockets;

/// <summary>
/// Socket operations on raw descriptors. Failures throw <see cref="SocketException"/> with the
/// <see cref="SocketError"/> that .NET's own sockets report for the same errno, so callers (and
/// Kestrel's "address in use" handling) see familiar errors.
/// </summary>
internal static unsafe class LinuxSocket
{
    /// <summary>A blocking, close-on-exec stream socket. Blocking on purpose: io_uring polls it itself.</summary>
    public static int Create(AddressFamily family)
    {
        int domain = family switch
        {
            AddressFamily.InterNetwork => SocketInterop.AfInet,
            AddressFamily.InterNetworkV6 => SocketInterop.AfInet6,
            AddressFamily.Unix => SocketInterop.AfUnix,
            _ => throw new NotSupportedException($"Address family {family} is not supported."),
        };
        int fd = SocketInterop.Socket(domain, SocketInterop.SockStream | SocketInterop.SockCloexec, 0);
        return fd >= 0 ? fd : throw Error(Libc.LastErrno);
    }

    /// <summary>
    /// Creates, configures, binds and listens, as Kestrel's Sockets transport does: SO_REUSEADDR
    /// for IP (as .NET sets on Unix), dual mode for IPv6Any, SO_REUSEPORT when asked.
    /// </summary>
    public static int CreateListener(EndPoint endPoint, int backlog, bool reusePort)
    {
        int fd = Create(endPoint.AddressFamily);
        try
        {
            if (endPoint is IPEndPoint ip)
            {
                SetReuseAddress(fd, true);
                if (ip.AddressFamily == AddressFamily.InterNetworkV6)
                {
                    SetDualMode(fd, ip.Address.Equals(IPAddress.IPv6Any));
                }

                if (reusePort)
                {
                    SetIntOption(fd, SocketInterop.SolSocket, SocketInterop.SoReusePort, 1);
                }
            }

            Bind(fd, endPoint);
            Listen(fd, backlog);
            return fd;
        }
        catch
        {
            Libc.Close(fd);
            throw;
        }
    }

    public static void SetReuseAddress(int fd, bool value) => SetIntOption(fd, SocketInterop.SolSocket, SocketInterop.SoReuseAddr, value ? 1 : 0);

    public static void SetNoDelay(int fd, bool value) => SetIntOption(fd, SocketInterop.IpProtoTcp, SocketInterop.TcpNoDelay, value ? 1 : 0);

    public static void SetDualMode(int fd, bool dualMode) => SetIntOption(fd, SocketInterop.IpProtoIpv6, SocketInterop.Ipv6V6Only, dualMode ? 0 : 1);

    /// <summary>SO_LINGER {on, 0 s}: close sends RST and discards unsent data.</summary>
    public static void SetLingerZero(int fd)
    {
        int* linger = stackalloc int[2] { 1, 0 }; // struct linger { int l_onoff; int l_linger; }
        _ = SocketInterop.SetSockOpt(fd, SocketInterop.SolSocket, SocketInterop.SoLinger, linger, 2 * sizeof(int));
    }

    public static void SetIntOption(int fd, int level, int name, int value)
    {
        if (SocketInterop.SetSockOpt(fd, level, name, &value, sizeof(int)) != 0)
        {
            throw Error(Libc.LastErrno);
        }
    }

    public static int GetIntOption(int fd, int level, int name)
    {
        int value = 0;
        int length = sizeof(int);
        return SocketInterop.GetSockOpt(fd, level, name, &value, &length) == 0 ? value : throw Error(Libc.LastErrno);
    }

    public static void Bind(int fd, EndPoint endPoint)
    {
        byte* address = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.Write(endPoint, new Span<byte>(address, SocketAddressMarshal.MaxLength));
        if (SocketInterop.Bind(fd, address, length) != 0)
        {
            throw Error(Libc.LastErrno);
        }
    }

    public static void Listen(int fd, int backlog)
    {
        if (SocketInterop.Listen(fd, backlog) != 0)
        {
            throw Error(Libc.LastErrno);
        }
    }

    public static EndPoint? GetLocalEndPoint(int fd)
    {
        byte* address = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.MaxLength;
        return SocketInterop.GetSockName(fd, address, &length) == 0
            ? SocketAddressMarshal.Read(new ReadOnlySpan<byte>(address, SocketAddressMarshal.MaxLength), length)
            : throw Error(Libc.LastErrno);
    }

    /// <summary>The peer, or null when it is gone already (ENOTCONN) or unnamed.</summary>
    public static EndPoint? GetRemoteEndPoint(int fd)
    {
        byte* address = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.MaxLength;
        if (SocketInterop.GetPeerName(fd, address, &length) != 0)
        {
            int errno = Libc.LastErrno;
            return errno == Errno.ENOTCONN ? null : throw Error(errno);
        }

        return SocketAddressMarshal.Read(new ReadOnlySpan<byte>(address, SocketAddressMarshal.MaxLength), length);
    }

    /// <summary>shutdown(2); errors (the peer is already gone) are ignored, as there is nothing left to shut.</summary>
    public static void Shutdown(int fd, SocketShutdown how) => _ = SocketInterop.Shutdown(fd, (int)how);

    public static void Close(int fd) => Libc.Close(fd);

    public static AddressFamily GetAddressFamily(int fd) => GetIntOption(fd, SocketInterop.SolSocket, SocketInterop.SoDomain) switch
    {
        SocketInterop.AfInet => AddressFamily.InterNetwork,
        SocketInterop.AfInet6 => AddressFamily.InterNetworkV6,
        SocketInterop.AfUnix => AddressFamily.Unix,
        _ => AddressFamily.Unknown,
    };

    public static bool IsListening(int fd)
    {
        try
        {
            return GetIntOption(fd, SocketInterop.SolSocket, SocketInterop.SoAcceptConn) != 0;
        }
        catch (SocketException)
        {
            return false; // not a socket at all
        }
    }

    public static SocketException Error(int errno) => new((int)SocketErrors.FromErrno(errno));
}
