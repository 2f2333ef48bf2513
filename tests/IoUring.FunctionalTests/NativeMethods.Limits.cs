using System.Runtime.InteropServices;

namespace IoUring.FunctionalTests;

internal static partial class NativeMethods
{
    public const int RlimitNofile = 7;     // RLIMIT_NOFILE, <sys/resource.h>

    [LibraryImport("libc", EntryPoint = "getrlimit", SetLastError = true)]
    public static partial int GetRLimit(int resource, out RLimit limit);

    [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
    public static partial int SetRLimit(int resource, in RLimit limit);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "clock_gettime", SetLastError = true)]
    public static partial int ClockGetTime(int clock, out Timespec time);

    /// <summary>struct rlimit on 64-bit Linux.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    /// <summary>struct timespec on 64-bit Linux.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    /// <summary>
    /// CPU time of one thread of this process, through its CPU clock id (MAKE_THREAD_CPUCLOCK(tid,
    /// CPUCLOCK_SCHED) in the kernel's include/linux/posix-timers.h: ~tid &lt;&lt; 3 | per-thread | sched).
    /// A system call, so it works when no descriptor is left (unlike reading /proc). Zero once the thread ended.
    /// </summary>
    public static System.TimeSpan ThreadCpuTime(int tid)
    {
        int clock = (~tid << 3) | 4 | 2;
        return ClockGetTime(clock, out Timespec t) != 0
            ? System.TimeSpan.Zero
            : System.TimeSpan.FromTicks(t.Seconds * System.TimeSpan.TicksPerSecond + t.Nanoseconds / 100);
    }
}
