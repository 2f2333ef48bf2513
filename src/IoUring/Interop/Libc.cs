using System.Runtime.InteropServices;

namespace IoUring.Interop;

/// <summary>
/// The few libc entry points the binding needs. Only libc: nothing native ships with the library.
/// Every import sets errno so callers read it with <see cref="Marshal.GetLastPInvokeError"/>.
/// </summary>
internal static unsafe partial class Libc
{
    public const int ProtRead = 0x1;
    public const int ProtWrite = 0x2;
    public const int MapShared = 0x01;
    public const int MapPrivate = 0x02;
    public const int MapAnonymous = 0x20;
    public const int MapPopulate = 0x8000;
    public static readonly void* MapFailed = (void*)-1;

    public const int EfdCloexec = 0x80000;
    public const int EfdNonblock = 0x800;

    // syscall(2) is variadic in C. On the 64-bit Linux ABIs we run on (x86_64 SysV, AArch64),
    // integer variadic arguments travel in the same registers as fixed ones, so a fixed six-long
    // signature is a faithful call; unused arguments are ignored by the kernel.
    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    public static partial long Syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    public static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(void* addr, nuint length);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, void* buffer, nuint count);

    /// <summary>gettid(2): the calling thread's id (glibc 2.30+), without an architecture's syscall number.</summary>
    [LibraryImport("libc", EntryPoint = "gettid")]
    public static partial int GetTid();

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initialValue, int flags);

    [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    public static partial int Pipe2(int* fds, int flags);

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    public static partial int SocketPair(int domain, int type, int protocol, int* fds);

    /// <summary>The errno of the last failed import on this thread.</summary>
    public static int LastErrno => Marshal.GetLastPInvokeError();
}
