using System.Runtime.InteropServices;

namespace IoUring.Tests.Sockets;

// struct pollfd (poll.h): 8 bytes: offset 0 int fd, 4 short events, 6 short revents.
[StructLayout(LayoutKind.Sequential)]
internal struct PollFd
{
    public int Fd;
    public short Events;
    public short ReturnedEvents;
}
