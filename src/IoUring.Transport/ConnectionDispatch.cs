namespace IoUring.Transport;

/// <summary>How the kernel chooses the ring (and so the thread and the CPU) that owns a new TCP connection.</summary>
/// <remarks>
/// Each ring has its own listening socket per TCP endpoint, all in one SO_REUSEPORT group; the
/// choice is made in the kernel when the connection's SYN arrives, before user space sees it.
/// Unix domain socket and adopted-handle endpoints have a single listener and are not affected.
/// </remarks>
public enum ConnectionDispatch
{
    /// <summary>The kernel's reuseport hash of the connection's addresses and ports: even on average, blind to load and locality. No BPF.</summary>
    Kernel = 0,

    /// <summary>
    /// Rings are pinned to CPUs (ring i to the CPUs whose number modulo the ring count is i; one CPU
    /// each when there are as many rings as CPUs) and a classic BPF reuseport program sends each
    /// connection to the ring on the CPU that processed its SYN, so the connection's packets, its
    /// socket and its ring stay on one CPU. Needs no privilege.
    /// </summary>
    IncomingCpu = 1,

    /// <summary>
    /// An eBPF sk_reuseport program sends each connection to the ring with the fewest connections
    /// (open ones plus those waiting to be accepted), which the rings publish in a shared map
    /// without a system call. Needs CAP_BPF and CAP_NET_ADMIN; without them the transport uses
    /// <see cref="Kernel"/> and warns once, unless <see cref="IoUringTransportOptions.FallbackToKernelDispatch"/> is false.
    /// </summary>
    LeastConnections = 2,
}
