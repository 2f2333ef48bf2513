using System;
using IoUring.Sockets;

namespace IoUring.Tests.Sockets;

// Closes a raw descriptor at the end of a test, whatever the outcome, so a failing assertion does not
// leak listeners that would disturb later tests.
internal sealed class OwnedFd : IDisposable
{
    private int _fd;

    public OwnedFd(int fd)
    {
        _fd = fd;
    }

    public int Fd => _fd >= 0 ? _fd : throw new ObjectDisposedException(nameof(OwnedFd));

    // Hands the descriptor to a test that closes it itself (for instance to check close semantics).
    public int Release()
    {
        int fd = Fd;
        _fd = -1;
        return fd;
    }

    public void Dispose()
    {
        if (_fd >= 0)
        {
            LinuxSocket.Close(_fd);
            _fd = -1;
        }
    }
}
