using System;
using System.Runtime.InteropServices;

namespace IoUring;

/// <summary>An io_uring system call or request failed with an errno the caller did not expect.</summary>
internal sealed class IoUringException : Exception
{
    public IoUringException(string operation, int errno)
        : base($"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).")
    {
        Errno = errno;
    }

    /// <summary>The positive errno value.</summary>
    public int Errno { get; }
}
