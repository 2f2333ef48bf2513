using System;
using System.Collections.Generic;
using System.IO;
using System.Globalization;
using IoUring.Interop;

namespace IoUring;

/// <summary>
/// Decides whether io_uring can run here and, when it cannot, says why in terms an operator can
/// act on. The classification is a pure function of the errno and of <see cref="SystemState"/>,
/// so tests cover every branch without changing the machine's sysctls.
/// </summary>
internal static class IoUringAvailability
{
    private const string DisabledSysctlPath = "/proc/sys/kernel/io_uring_disabled";

    /// <summary>What the classification reads from the system besides the errno.</summary>
    /// <param name="IoUringDisabled">kernel.io_uring_disabled (0, 1 or 2; null where the sysctl does not exist, before 6.6).</param>
    /// <param name="SeccompMode">The <c>Seccomp:</c> line of /proc/self/status (0 none, 1 strict, 2 filter; null if absent).</param>
    internal readonly record struct SystemState(int? IoUringDisabled, int? SeccompMode)
    {
        public static SystemState Current => new(ReadInt(DisabledSysctlPath), ReadSeccompMode());
    }

    /// <summary>Turns a failed io_uring_setup into the exception the user sees.</summary>
    public static IoUringUnavailableException Classify(int errno, SystemState state)
    {
        switch (errno)
        {
            case Errno.ENOSYS:
                return state.SeccompMode == 2
                    ? new IoUringUnavailableException(
                        IoUringUnavailableReason.BlockedBySecurityPolicy,
                        errno,
                        "io_uring_setup returned ENOSYS and this process runs under a seccomp filter, which is the likely cause " +
                        "(container runtimes' default profiles block io_uring). Allow io_uring_setup, io_uring_enter and " +
                        "io_uring_register in the seccomp profile, or run on a kernel that has io_uring (Linux 6.1 or later).")
                    : new IoUringUnavailableException(
                        IoUringUnavailableReason.NotSupportedByKernel,
                        errno,
                        "The kernel does not implement io_uring (io_uring_setup returned ENOSYS): it is older than 5.1 or was " +
                        "built without CONFIG_IO_URING. This transport needs Linux 6.1 or later with io_uring enabled.");

            case Errno.EPERM:
            case Errno.EACCES:
                return state.IoUringDisabled switch
                {
                    2 => new IoUringUnavailableException(
                        IoUringUnavailableReason.DisabledBySysctl,
                        errno,
                        "io_uring is disabled on this machine: the sysctl kernel.io_uring_disabled is 2. An administrator can " +
                        "allow it with 'sysctl -w kernel.io_uring_disabled=0' (or 1 with kernel.io_uring_group)."),
                    1 => new IoUringUnavailableException(
                        IoUringUnavailableReason.DisabledBySysctl,
                        errno,
                        "io_uring is restricted on this machine: the sysctl kernel.io_uring_disabled is 1, which allows it only " +
                        "to processes with CAP_SYS_ADMIN or in the group named by kernel.io_uring_group. Add this process's user " +
                        "to that group, or set kernel.io_uring_disabled to 0."),
                    _ => new IoUringUnavailableException(
                        IoUringUnavailableReason.BlockedBySecurityPolicy,
                        errno,
                        "io_uring_setup was refused (EPERM) although kernel.io_uring_disabled allows it: a seccomp profile " +
                        "(a container runtime's default, for instance) or a security module (SELinux, AppArmor) blocks io_uring. " +
                        "Allow io_uring_setup, io_uring_enter and io_uring_register for this process."),
                };

            case Errno.ENOMEM:
            case Errno.EMFILE:
            case Errno.ENFILE:
                return new IoUringUnavailableException(
                    IoUringUnavailableReason.InsufficientResources,
                    errno,
                    $"io_uring_setup failed for lack of resources (errno {errno}): raise the open file limit (ulimit -n) or " +
                    "the memory available to the process, or use fewer or smaller rings.");

            case Errno.EINVAL:
                return new IoUringUnavailableException(
                    IoUringUnavailableReason.MissingKernelFeature,
                    errno,
                    "io_uring_setup rejected every flag combination the transport can use (EINVAL): the kernel is too old. " +
                    "This transport needs Linux 6.1 or later.");

            default:
                return new IoUringUnavailableException(
                    IoUringUnavailableReason.Other,
                    errno,
                    $"io_uring_setup failed with errno {errno}.");
        }
    }

    /// <summary>
    /// Turns a refusal of <paramref name="call"/> (io_uring_register or io_uring_enter) on a ring that
    /// io_uring_setup did create into the exception the user sees. A seccomp profile that allows
    /// only some of the three calls (a hand-written one, say) refuses the others with EPERM, or
    /// ENOSYS where it answers as if they did not exist; so can a security module.
    /// </summary>
    public static IoUringUnavailableException ClassifyRingCall(string call, int errno)
        => errno is Errno.EPERM or Errno.EACCES or Errno.ENOSYS
            ? new IoUringUnavailableException(
                IoUringUnavailableReason.BlockedBySecurityPolicy,
                errno,
                $"io_uring_setup succeeded but {call} was refused (errno {errno}): a seccomp profile or a security module " +
                "allows only some of the io_uring system calls. Allow io_uring_setup, io_uring_enter and io_uring_register " +
                "for this process.")
            : new IoUringUnavailableException(
                IoUringUnavailableReason.Other,
                errno,
                $"io_uring_setup succeeded but {call} failed with errno {errno}.");

    /// <summary>The exception for required operations the kernel's probe does not list.</summary>
    public static IoUringUnavailableException MissingOperations(IEnumerable<string> operations)
        => new(
            IoUringUnavailableReason.MissingKernelFeature,
            0,
            $"The kernel's io_uring lacks operations this transport requires ({string.Join(", ", operations)}). " +
            "This transport needs Linux 6.1 or later.");

    private static int? ReadInt(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static int? ReadSeccompMode()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("Seccomp:", StringComparison.Ordinal) &&
                    int.TryParse(line.AsSpan("Seccomp:".Length).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int mode))
                {
                    return mode;
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return null;
    }
}
