using System.Runtime.InteropServices;

namespace IoUring.FunctionalTests;

internal static partial class NativeMethods
{
    [LibraryImport("libc", EntryPoint = "dup", SetLastError = true)]
    public static partial int Dup(int fd);
}
