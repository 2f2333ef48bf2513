namespace IoUring;

/// <summary>Why io_uring cannot be used in this process.</summary>
public enum IoUringUnavailableReason
{
    /// <summary>The kernel does not implement io_uring (ENOSYS): older than 5.1, or built without CONFIG_IO_URING.</summary>
    NotSupportedByKernel,

    /// <summary>The <c>kernel.io_uring_disabled</c> sysctl forbids io_uring to this process.</summary>
    DisabledBySysctl,

    /// <summary>A seccomp filter (a container runtime's default profile, for instance) or a security module refuses the system calls.</summary>
    BlockedBySecurityPolicy,

    /// <summary>The kernel is too old for an operation or feature the transport requires.</summary>
    MissingKernelFeature,

    /// <summary>Memory or descriptor limits stopped the ring's creation.</summary>
    InsufficientResources,

    /// <summary>Any other failure; the message carries the errno.</summary>
    Other,
}
