using System.Net.Sockets;
using IoUring.Interop;

namespace IoUring.Sockets;

/// <summary>Maps Linux errno values to the <see cref="SocketError"/> .NET reports for them.</summary>
internal static class SocketErrors
{
    public static SocketError FromErrno(int errno) => errno switch
    {
        Errno.EADDRINUSE => SocketError.AddressAlreadyInUse,
        Errno.EADDRNOTAVAIL => SocketError.AddressNotAvailable,
        Errno.EACCES or Errno.EPERM => SocketError.AccessDenied,
        Errno.EAFNOSUPPORT => SocketError.AddressFamilyNotSupported,
        Errno.EINVAL => SocketError.InvalidArgument,
        Errno.EMFILE or Errno.ENFILE => SocketError.TooManyOpenSockets,
        Errno.ECONNREFUSED => SocketError.ConnectionRefused,
        Errno.ECONNRESET => SocketError.ConnectionReset,
        Errno.EPIPE or Errno.ESHUTDOWN => SocketError.Shutdown,
        Errno.ENOTCONN => SocketError.NotConnected,
        Errno.ETIMEDOUT => SocketError.TimedOut,
        Errno.EAGAIN => SocketError.WouldBlock,
        Errno.EINPROGRESS => SocketError.InProgress,
        Errno.ENOBUFS => SocketError.NoBufferSpaceAvailable,
        Errno.ENOTSOCK => SocketError.NotSocket,
        Errno.ECONNABORTED => SocketError.ConnectionAborted,
        Errno.EHOSTUNREACH => SocketError.HostUnreachable,
        Errno.ENETUNREACH => SocketError.NetworkUnreachable,
        _ => SocketError.SocketError,
    };
}
