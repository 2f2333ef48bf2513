using System.IO;
using IoUring.Transport.Internal;

namespace IoUring.FunctionalTests;

/// <summary>
/// The /proc/self/task directory of a ring's thread (proc(5)), by its id in the kernel. Not by its
/// name ("io_uring ring N"): every ring group names its threads so, and a thread of another group
/// (a client's rings, a server still ending) can hold the same name.
/// </summary>
internal static class RingThreadTask
{
    public static string Of(RingThread ring) => Path.Combine("/proc/self/task", ring.OsThreadId.ToString(System.Globalization.CultureInfo.InvariantCulture));
}
