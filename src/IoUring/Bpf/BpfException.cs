using System;
using System.Runtime.InteropServices;

namespace IoUring.Bpf;

/// <summary>A bpf(2) command failed, or the kernel lacks what a program needs; <see cref="Errno"/> says why (EPERM: the process lacks CAP_BPF or CAP_NET_ADMIN).</summary>
internal sealed class BpfException : Exception
{
    public BpfException(string operation, int errno, string? verifierLog = null)
        : base($"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).{(string.IsNullOrWhiteSpace(verifierLog) ? "" : " Verifier log:\n" + verifierLog)}")
    {
        Errno = errno;
        VerifierLog = verifierLog;
    }

    /// <summary>The kernel lacks what a program needs (a type or function in its BTF), found before any bpf() call; <see cref="Errno"/> is EOPNOTSUPP.</summary>
    public static BpfException Unsupported(string message) => new(Interop.Errno.EOPNOTSUPP, message);

    /// <summary>The process may not do what a program needs (a capability it lacks), found before any bpf() call; <see cref="Errno"/> is EPERM.</summary>
    public static BpfException NotPermitted(string message) => new(Interop.Errno.EPERM, message);

    private BpfException(int errno, string message)
        : base(message)
    {
        Errno = errno;
    }

    /// <summary>The positive errno value.</summary>
    public int Errno { get; }

    /// <summary>What the verifier said about a rejected program, if it was asked.</summary>
    public string? VerifierLog { get; }
}
