using System.Net;
using System.Net.Sockets;
using IoUring.Interop;
using IoUring.Sockets;
using Xunit;

namespace IoUring.Tests.Sockets;

public class SocketErrorsTests
{
    [Theory]
    [InlineData(Errno.EADDRINUSE, SocketError.AddressAlreadyInUse)]
    [InlineData(Errno.EADDRNOTAVAIL, SocketError.AddressNotAvailable)]
    [InlineData(Errno.EACCES, SocketError.AccessDenied)]
    [InlineData(Errno.EPERM, SocketError.AccessDenied)]
    [InlineData(Errno.EAFNOSUPPORT, SocketError.AddressFamilyNotSupported)]
    [InlineData(Errno.EINVAL, SocketError.InvalidArgument)]
    [InlineData(Errno.EMFILE, SocketError.TooManyOpenSockets)]
    [InlineData(Errno.ENFILE, SocketError.TooManyOpenSockets)]
    [InlineData(Errno.ECONNREFUSED, SocketError.ConnectionRefused)]
    [InlineData(Errno.ECONNRESET, SocketError.ConnectionReset)]
    [InlineData(Errno.EPIPE, SocketError.Shutdown)]
    [InlineData(Errno.ESHUTDOWN, SocketError.Shutdown)]
    [InlineData(Errno.ENOTCONN, SocketError.NotConnected)]
    [InlineData(Errno.ETIMEDOUT, SocketError.TimedOut)]
    [InlineData(Errno.EAGAIN, SocketError.WouldBlock)]
    [InlineData(Errno.EINPROGRESS, SocketError.InProgress)]
    [InlineData(Errno.ENOBUFS, SocketError.NoBufferSpaceAvailable)]
    [InlineData(Errno.ENOTSOCK, SocketError.NotSocket)]
    [InlineData(Errno.ECONNABORTED, SocketError.ConnectionAborted)]
    [InlineData(Errno.EHOSTUNREACH, SocketError.HostUnreachable)]
    [InlineData(Errno.ENETUNREACH, SocketError.NetworkUnreachable)]
    [InlineData(Errno.EOPNOTSUPP, SocketError.OperationNotSupported)]
    [InlineData(Errno.ENOENT, SocketError.AddressNotAvailable)] // a Unix socket path that does not exist (ClientConnectionTests compares with Socket)
    [InlineData(0x7fff, SocketError.SocketError)]
    public void FromErrno_MapsToTheSocketErrorSystemNetSocketsUses(int errno, SocketError expected) =>
        Assert.Equal(expected, SocketErrors.FromErrno(errno));

    [Fact]
    public void CreateException_CarriesTheCodeKestrelFiltersOnAndTheContext()
    {
        var endPoint = new IPEndPoint(IPAddress.Loopback, 5000);

        SocketException error = SocketErrors.CreateException(Errno.EADDRINUSE, "bind", endPoint);

        Assert.Equal(SocketError.AddressAlreadyInUse, error.SocketErrorCode);
        Assert.Equal(Errno.EADDRINUSE, error.NativeErrorCode);
        Assert.Contains("bind 127.0.0.1:5000", error.Message, System.StringComparison.Ordinal);
        Assert.Contains("errno 98", error.Message, System.StringComparison.Ordinal);
    }
}
