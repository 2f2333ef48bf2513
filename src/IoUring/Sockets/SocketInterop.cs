using System.Runtime.InteropServices;

namespace IoUring.Sockets;

// Raw libc socket calls and the Linux x86_64 constants they take. Everything here mirrors the C API
// one to one (names kept in their C spelling so they can be grepped against the headers); the
// checked, exception-throwing layer on top is LinuxSocket.
//
// socklen_t is a 32-bit unsigned int on Linux; it is declared as int here because every length we
// pass is at most SocketAddressMarshal.MaxLength, and int* and uint* marshal identically.
internal static unsafe partial class SocketInterop
{
    // Address families: x86_64-linux-gnu/bits/socket.h (PF_LOCAL, PF_INET, PF_INET6).
    public const int AF_UNIX = 1;
    public const int AF_INET = 2;
    public const int AF_INET6 = 10;

    // Socket types and the flags that can be or-ed into the type argument of socket() and the
    // flags argument of accept4(): x86_64-linux-gnu/bits/socket_type.h. The flags are the octal
    // O_NONBLOCK (04000) and O_CLOEXEC (02000000) values, shown here in hex.
    public const int SOCK_STREAM = 1;
    public const int SOCK_NONBLOCK = 0x800;
    public const int SOCK_CLOEXEC = 0x80000;

    // Socket-level options: asm-generic/socket.h (x86_64 uses the generic values).
    public const int SOL_SOCKET = 1;
    public const int SO_REUSEADDR = 2;
    public const int SO_TYPE = 3;
    public const int SO_ERROR = 4;
    public const int SO_KEEPALIVE = 9;
    public const int SO_LINGER = 13;
    public const int SO_REUSEPORT = 15;
    public const int SO_ACCEPTCONN = 30;
    public const int SO_DOMAIN = 39;
    public const int SO_INCOMING_CPU = 49;
    public const int SO_ATTACH_REUSEPORT_CBPF = 51;
    public const int SO_ATTACH_REUSEPORT_EBPF = 52;
    public const int SO_DETACH_REUSEPORT_BPF = 68;

    // Protocol levels: netinet/in.h. Options: netinet/tcp.h and x86_64-linux-gnu/bits/in.h.
    public const int IPPROTO_TCP = 6;
    public const int IPPROTO_IPV6 = 41;
    public const int TCP_NODELAY = 1;
    public const int IPV6_V6ONLY = 26;

    // shutdown() directions: x86_64-linux-gnu/sys/socket.h.
    public const int SHUT_RD = 0;
    public const int SHUT_WR = 1;
    public const int SHUT_RDWR = 2;

    // send()/recv() flags: x86_64-linux-gnu/bits/socket.h. MSG_NOSIGNAL keeps a write to a reset
    // peer an EPIPE error instead of a SIGPIPE, whatever the process signal disposition is.
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_NOSIGNAL = 0x4000;

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    public static partial int Bind(int fd, byte* address, int addressLength);

    [LibraryImport("libc", EntryPoint = "listen", SetLastError = true)]
    public static partial int Listen(int fd, int backlog);

    [LibraryImport("libc", EntryPoint = "accept4", SetLastError = true)]
    public static partial int Accept4(int fd, byte* address, int* addressLength, int flags);

    [LibraryImport("libc", EntryPoint = "connect", SetLastError = true)]
    public static partial int Connect(int fd, byte* address, int addressLength);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int fd, int level, int name, void* value, int valueLength);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int GetSockOpt(int fd, int level, int name, void* value, int* valueLength);

    [LibraryImport("libc", EntryPoint = "getsockname", SetLastError = true)]
    public static partial int GetSockName(int fd, byte* address, int* addressLength);

    [LibraryImport("libc", EntryPoint = "getpeername", SetLastError = true)]
    public static partial int GetPeerName(int fd, byte* address, int* addressLength);

    [LibraryImport("libc", EntryPoint = "shutdown", SetLastError = true)]
    public static partial int Shutdown(int fd, int how);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    public static partial nint Recv(int fd, byte* buffer, nuint length, int flags);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    public static partial nint Send(int fd, byte* buffer, nuint length, int flags);
}
