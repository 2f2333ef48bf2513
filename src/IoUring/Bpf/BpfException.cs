using System;
using System.Runtime.InteropServices;

namespace IoUring.Bpf;

/// <summary>A bpf(2) command failed; <see cref="Errno"/> says why (EPERM: the process lacks CAP_BPF or CAP_NET_ADMIN).</summary>
internal sealed class BpfException : Exception
{
    public BpfException(string operation, int errno, string? verifierLog = null)
        : base($"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).{(string.IsNullOrWhiteSpace(verifierLog) ? "" : " Verifier log:\n" + verifierLog)}")
    {
        Errno = errno;
        VerifierLog = verifierLog;
    }

    /// <summary>The positive errno value.</summary>
    public int Errno { get; }

    /// <summary>What the verifier said about a rejected program, if it was asked.</summary>
    public string? VerifierLog { get; }
}
