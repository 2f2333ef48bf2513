using System.Runtime.InteropServices;

namespace IoUring.FunctionalTests;

internal static partial class NativeMethods
{
    public const int SigKill = 9;          // SIGKILL, <signal.h>

    /// <summary>kill(2): a negative <paramref name="pid"/> signals every process of that process group.</summary>
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);
}
