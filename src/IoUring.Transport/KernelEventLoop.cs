namespace IoUring.Transport;

/// <summary>Where each ring's event loop runs: in the ring thread, or inside the kernel as a BPF program (Linux 7.1+).</summary>
/// <remarks>
/// With the kernel event loop, a BPF <c>struct_ops</c> program of type <c>io_uring_bpf_ops</c> is
/// attached to each ring, and every <c>io_uring_enter</c> of the ring thread runs it: it submits
/// what the ring thread queued and waits, in the kernel, until a completion is ready. It needs
/// Linux 7.1 or later (the kernel's BTF has <c>struct io_uring_bpf_ops</c>) and the capabilities
/// CAP_BPF and CAP_PERFMON (root has them). What each ring runs is in
/// <see cref="IoUringTransportFactory.KernelEventLoopRings"/>.
/// </remarks>
public enum KernelEventLoop
{
    /// <summary>The ring thread runs its loop in user space, one <c>io_uring_enter</c> per submit or wait.</summary>
    Off = 0,

    /// <summary>
    /// The kernel event loop where the kernel and the process's privileges allow it; elsewhere the
    /// user-space loop, with one warning naming the reason (the verifier's log, if it refused the
    /// program, at Debug).
    /// </summary>
    WhereAvailable = 1,

    /// <summary>The kernel event loop on every ring, or the transport fails to start, naming the reason.</summary>
    Required = 2,
}
