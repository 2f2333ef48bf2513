using System.Runtime.InteropServices;

namespace IoUring.Sockets;

/// <summary>libc's socket calls and the Linux constants they take (bits/socket.h, asm-generic/socket.h, netinet/in.h, netinet/tcp.h).</summary>
internal static unsafe partial class SocketInterop
{
    public const int AfUnix = 1;
    public const int AfInet = 2;
    public const int AfInet6 = 10;
    public const int SockStream = 1;
    public const int SockNonblock = 0x800;
    public const int SockCloexec = 0x80000;
    public const int SolSocket = 1;
    public const int SoReuseAddr = 2;
    public const int SoType = 3;
    public const int SoError = 4;
    public const int SoLinger = 13;
    public const int SoReusePort = 15;
    public const int SoAcceptConn = 30;
    public const int SoDomain = 39;
    public const int SoAttachReuseportCbpf = 51;
    public const int SoAttachReuseportEbpf = 52;
    public const int IpProtoTcp = 6;
    public const int TcpNoDelay = 1;
    public const int IpProtoIpv6 = 41;
    public const int Ipv6V6Only = 26;

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    public static partial int Bind(int fd, byte* addr, int addrLen);

    [LibraryImport("libc", EntryPoint = "listen", SetLastError = true)]
    public static partial int Listen(int fd, int backlog);

    [LibraryImport("libc", EntryPoint = "accept4", SetLastError = true)]
    public static partial int Accept4(int fd, byte* addr, int* addrLen, int flags);

    [LibraryImport("libc", EntryPoint = "connect", SetLastError = true)]
    public static partial int Connect(int fd, byte* addr, int addrLen);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int fd, int level, int name, void* value, int length);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int GetSockOpt(int fd, int level, int name, void* value, int* length);

    [LibraryImport("libc", EntryPoint = "getsockname", SetLastError = true)]
    public static partial int GetSockName(int fd, byte* addr, int* addrLen);

    [LibraryImport("libc", EntryPoint = "getpeername", SetLastError = true)]
    public static partial int GetPeerName(int fd, byte* addr, int* addrLen);

    [LibraryImport("libc", EntryPoint = "shutdown", SetLastError = true)]
    public static partial int Shutdown(int fd, int how);
}
