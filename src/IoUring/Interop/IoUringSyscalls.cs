namespace IoUring.Interop;

/// <summary>
/// The three io_uring system calls. Each returns what the kernel returns: a non-negative result,
/// or a negated errno (the libc wrapper's -1/errno is folded back into the kernel's convention,
/// as liburing does, so callers never touch errno themselves).
/// </summary>
/// <remarks>
/// The numbers are the same on every architecture: io_uring was added after the syscall tables
/// were unified (include/uapi/asm-generic/unistd.h, Linux 5.1).
/// </remarks>
internal static unsafe class IoUringSyscalls
{
    private const long SysIoUringSetup = 425;
    private const long SysIoUringEnter = 426;
    private const long SysIoUringRegister = 427;

    public static int Setup(uint entries, IoUringParams* parameters)
        => Result(Libc.Syscall(SysIoUringSetup, entries, (long)parameters, 0, 0, 0, 0));

    public static int Enter(int fd, uint toSubmit, uint minComplete, uint flags, void* arg, nuint argSize)
        => Result(Libc.Syscall(SysIoUringEnter, fd, toSubmit, minComplete, flags, (long)arg, (long)argSize));

    public static int Register(int fd, uint opcode, void* arg, uint argCount)
        => Result(Libc.Syscall(SysIoUringRegister, fd, opcode, (long)arg, argCount, 0, 0));

    private static int Result(long ret) => ret < 0 ? -Libc.LastErrno : (int)ret;
}
