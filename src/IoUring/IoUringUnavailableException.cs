using System;
namespace IoUring;

/// <summary>
/// io_uring cannot be used in this process. <see cref="Reason"/> says why, and the message says what
/// an operator can do about it.
/// </summary>
public sealed class IoUringUnavailableException : Exception
{
    /// <summary>Creates the exception.</summary>
    public IoUringUnavailableException(IoUringUnavailableReason reason, int errno, string message)
        : base(message)
    {
        Reason = reason;
        Errno = errno;
    }

    /// <summary>Creates the exception with a generic message.</summary>
    public IoUringUnavailableException()
        : this(IoUringUnavailableReason.Other, 0, "io_uring is unavailable.")
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public IoUringUnavailableException(string message)
        : this(IoUringUnavailableReason.Other, 0, message)
    {
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public IoUringUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
        Reason = IoUringUnavailableReason.Other;
    }

    /// <summary>Why io_uring is unavailable.</summary>
    public IoUringUnavailableReason Reason { get; }

    /// <summary>The errno the kernel returned, or 0 when the reason is not an errno (a missing operation).</summary>
    public int Errno { get; }
}
