using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace IoUring.Interop;

/// <summary>
/// sched_getaffinity(2) / sched_setaffinity(2) for the calling thread (pid 0 means "this thread"
/// on Linux, where each thread has its own mask). The mask is a cpu_set_t: one bit per CPU, 1024 CPUs.
/// </summary>
internal static unsafe partial class CpuAffinity
{
    private const int MaskBytes = 128;

    [LibraryImport("libc", EntryPoint = "sched_getaffinity", SetLastError = true)]
    private static partial int SchedGetAffinity(int pid, nuint size, byte* mask);

    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    private static partial int SchedSetAffinity(int pid, nuint size, byte* mask);

    /// <summary>The CPUs the calling thread may run on, ascending.</summary>
    public static List<int> GetCurrentThread()
    {
        byte* mask = stackalloc byte[MaskBytes];
        new Span<byte>(mask, MaskBytes).Clear();
        if (SchedGetAffinity(0, MaskBytes, mask) != 0)
        {
            throw new IoUringException("sched_getaffinity", Libc.LastErrno);
        }

        var cpus = new List<int>();
        for (int cpu = 0; cpu < MaskBytes * 8; cpu++)
        {
            if ((mask[cpu >> 3] & (1 << (cpu & 7))) != 0)
            {
                cpus.Add(cpu);
            }
        }

        return cpus;
    }

    /// <summary>Restricts the calling thread to <paramref name="cpus"/>.</summary>
    public static void SetCurrentThread(IEnumerable<int> cpus)
    {
        byte* mask = stackalloc byte[MaskBytes];
        new Span<byte>(mask, MaskBytes).Clear();
        foreach (int cpu in cpus)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(cpu);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(cpu, MaskBytes * 8);
            mask[cpu >> 3] |= (byte)(1 << (cpu & 7));
        }

        if (SchedSetAffinity(0, MaskBytes, mask) != 0)
        {
            throw new IoUringException("sched_setaffinity", Libc.LastErrno);
        }
    }
}
