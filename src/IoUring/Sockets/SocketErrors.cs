using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using IoUring.Interop;

namespace IoUring.Sockets;

// Turns Linux errno values into the SocketError / SocketException shapes that Kestrel and callers of
// System.Net.Sockets already handle. Kestrel, for instance, only recognises a busy address through
// SocketException.SocketErrorCode == SocketError.AddressAlreadyInUse, so the mapping has to be exact
// for the values a listener can hit.
internal static class SocketErrors
{
    // errno values Interop.Errno does not carry (asm-generic/errno.h).
    private const int EDESTADDRREQ = 89;
    private const int EMSGSIZE = 90;
    private const int EPROTOTYPE = 91;
    private const int ENOPROTOOPT = 92;
    private const int EPROTONOSUPPORT = 93;
    private const int ENETRESET = 102;

    public static SocketError FromErrno(int errno) => errno switch
    {
        Errno.EADDRINUSE => SocketError.AddressAlreadyInUse,
        Errno.EADDRNOTAVAIL => SocketError.AddressNotAvailable,
        Errno.ENOENT => SocketError.AddressNotAvailable, // a Unix socket path that does not exist, as System.Net.Sockets maps it
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
        Errno.EALREADY => SocketError.AlreadyInProgress,
        Errno.ENOBUFS or Errno.ENOMEM => SocketError.NoBufferSpaceAvailable,
        Errno.ENOTSOCK => SocketError.NotSocket,
        Errno.ECONNABORTED => SocketError.ConnectionAborted,
        Errno.EHOSTUNREACH => SocketError.HostUnreachable,
        Errno.ENETUNREACH => SocketError.NetworkUnreachable,
        Errno.ENETDOWN => SocketError.NetworkDown,
        ENETRESET => SocketError.NetworkReset,
        Errno.EISCONN => SocketError.IsConnected,
        Errno.EOPNOTSUPP => SocketError.OperationNotSupported,
        Errno.ECANCELED => SocketError.OperationAborted,
        Errno.EINTR => SocketError.Interrupted,
        Errno.EFAULT => SocketError.Fault,
        EDESTADDRREQ => SocketError.DestinationAddressRequired,
        EMSGSIZE => SocketError.MessageSize,
        EPROTOTYPE => SocketError.ProtocolType,
        ENOPROTOOPT => SocketError.ProtocolOption,
        EPROTONOSUPPORT => SocketError.ProtocolNotSupported,
        _ => SocketError.SocketError,
    };

    // The message carries the raw errno and the failing call because FromErrno folds several errno
    // values into one SocketError (and unknown ones into SocketError.SocketError), and because a bare
    // "Address already in use" does not say which endpoint.
    public static SocketException CreateException(int errno, string operation, EndPoint? endPoint = null)
    {
        string where = endPoint is null ? operation : $"{operation} {endPoint}";
        string message = $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}, {where})";
        return new SocketException((int)FromErrno(errno), message);
    }

    // Reads errno straight after the failed P/Invoke; callers must not make another interop call first.
    public static SocketException LastError(string operation, EndPoint? endPoint = null) =>
        CreateException(Marshal.GetLastPInvokeError(), operation, endPoint);
}
