using System;

namespace IoUring.Transport;

/// <summary>Options for the io_uring transport.</summary>
public sealed class IoUringTransportOptions
{
    /// <summary>
    /// Whether to use io_uring at all. Set it to false (configuration key <c>Enabled</c>, so an
    /// environment variable works) to run on Kestrel's Sockets transport without a rebuild.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool Enabled { get; set; } = true;

    /// <summary>
    /// Whether to serve on Kestrel's Sockets transport, with one warning naming the reason, when
    /// io_uring cannot be used here (an old kernel, <c>kernel.io_uring_disabled</c>, a seccomp
    /// profile). When false, binding fails with <see cref="IoUringUnavailableException"/>.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool FallbackToSockets { get; set; } = true;

    /// <summary>The number of rings, each with its own thread and its own listening socket per endpoint.</summary>
    /// <remarks>Defaults to <see cref="Environment.ProcessorCount"/>.</remarks>
    public int RingCount { get; set; } = Environment.ProcessorCount;

    /// <summary>Submission queue entries per ring (a power of two); the completion queue gets eight times as many.</summary>
    /// <remarks>Defaults to 512.</remarks>
    public int SubmissionQueueSize { get; set; } = 512;

    /// <summary>Size in bytes of each provided receive buffer.</summary>
    /// <remarks>Defaults to 4096.</remarks>
    public int ReceiveBufferSize { get; set; } = 4096;

    /// <summary>Provided receive buffers per ring (a power of two, at most 32768). Idle connections hold none.</summary>
    /// <remarks>Defaults to 1024.</remarks>
    public int ReceiveBufferCount { get; set; } = 1024;

    /// <summary>Set TCP_NODELAY on accepted TCP connections.</summary>
    /// <remarks>Defaults to true.</remarks>
    public bool NoDelay { get; set; } = true;

    /// <summary>The maximum length of the pending connection queue of each listening socket.</summary>
    /// <remarks>Defaults to 512.</remarks>
    public int Backlog { get; set; } = 512;

    /// <summary>The maximum bytes the transport buffers from the network before the application reads them; null for no limit.</summary>
    /// <remarks>Defaults to 1 MiB. Reception pauses at the limit and resumes at half of it.</remarks>
    public long? MaxReadBufferSize { get; set; } = 1024 * 1024;

    /// <summary>The maximum bytes the application may write ahead of the network; null for no limit.</summary>
    /// <remarks>Defaults to 64 KiB. Writers wait at the limit and resume at half of it.</remarks>
    public long? MaxWriteBufferSize { get; set; } = 64 * 1024;

    /// <summary>
    /// Run the application's read continuations inline on the ring thread instead of the thread
    /// pool. Saves a thread hop per read, but application code that blocks then stalls every
    /// connection of that ring: use only when no handler ever blocks.
    /// </summary>
    /// <remarks>Defaults to false.</remarks>
    public bool UnsafePreferInlineScheduling { get; set; }

    /// <summary>
    /// Sends of at least this many bytes use zero-copy send (IORING_OP_SEND_ZC or
    /// IORING_OP_SENDMSG_ZC): the kernel reads the transport's buffers in place instead of copying
    /// them, and the buffers stay pinned until it says it is done. It pays for large sends on real
    /// network devices; over loopback the kernel copies anyway, so measure before enabling. A send
    /// completes only when the peer has acknowledged its data, and small zero-copy writes take more
    /// of a peer's receive buffer than copied ones (seen here: a client with a 4 KiB receive buffer
    /// reading 3,000-byte writes fell to about 10 KB/s, paced by TCP's persist timer), so keep
    /// the threshold well above the usual response size. Null disables it.
    /// </summary>
    /// <remarks>Defaults to null (never).</remarks>
    public int? ZeroCopySendThreshold { get; set; }

    /// <summary>
    /// Which ring gets each new TCP connection, decided in the kernel: the kernel's reuseport hash,
    /// the ring on the CPU that took the connection's SYN, or the ring with the fewest connections.
    /// See <see cref="ConnectionDispatch"/> for what each needs.
    /// </summary>
    /// <remarks>Defaults to <see cref="ConnectionDispatch.Kernel"/>.</remarks>
    public ConnectionDispatch Dispatch { get; set; } = ConnectionDispatch.Kernel;

    /// <summary>
    /// Whether to fall back to <see cref="ConnectionDispatch.Kernel"/>, with one warning naming the
    /// reason, when the chosen <see cref="Dispatch"/> cannot be set up (no CAP_BPF/CAP_NET_ADMIN for
    /// <see cref="ConnectionDispatch.LeastConnections"/>). When false, binding fails instead.
    /// </summary>
    /// <remarks>Defaults to true.</remarks>
    public bool FallbackToKernelDispatch { get; set; } = true;

    /// <summary>
    /// Where each ring's event loop runs (<see cref="Transport.KernelEventLoop"/>): in the ring
    /// thread, or as a BPF program inside the kernel (Linux 7.1+, CAP_BPF and CAP_PERFMON).
    /// </summary>
    /// <remarks>Defaults to <see cref="KernelEventLoop.Off"/> (perf/README.md, "The kernel event loop", says why).</remarks>
    public KernelEventLoop KernelEventLoop { get; set; } = KernelEventLoop.Off;

    /// <summary>
    /// Whether each ring runs only the io_uring operations the transport submits (accept, receive,
    /// send and sendmsg with their zero-copy forms, cancel, read of its wake eventfd, timeout) and
    /// denies every other with EACCES, so memory corruption in the process cannot use a ring to
    /// open files or connect elsewhere. It is an io_uring BPF filter (IORING_REGISTER_BPF_FILTER,
    /// Linux 7.0+), which needs no privilege on the process's own rings; on older kernels the rings
    /// run without it (logged once at Debug).
    /// </summary>
    /// <remarks>Defaults to true. Turn it off only to submit other operations on the transport's rings.</remarks>
    public bool RestrictRingOperations { get; set; } = true;

    /// <summary>
    /// Whether the rings' opcode allowlist (<see cref="RestrictRingOperations"/>) includes connect:
    /// set by <see cref="IoUringConnectionFactory"/>, which must exist before the rings start.
    /// Internal: not bound from configuration.
    /// </summary>
    internal bool AllowConnect { get; set; }

    /// <summary>Fault injection and inspection for the project's tests; null in use (not bound from configuration: internal).</summary>
    internal Internal.TransportTestHooks? TestHooks { get; set; }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first option out of range.</summary>
    internal void Validate()
    {
        Check(RingCount >= 1 && RingCount <= 1024, nameof(RingCount), RingCount, "must be from 1 to 1024");
        Check(SubmissionQueueSize >= 8 && SubmissionQueueSize <= 32768 && IsPowerOfTwo(SubmissionQueueSize), nameof(SubmissionQueueSize), SubmissionQueueSize, "must be a power of two from 8 to 32768");
        Check(ReceiveBufferCount >= 1 && ReceiveBufferCount <= 32768 && IsPowerOfTwo(ReceiveBufferCount), nameof(ReceiveBufferCount), ReceiveBufferCount, "must be a power of two from 1 to 32768");
        Check(ReceiveBufferSize >= 64 && ReceiveBufferSize <= 1024 * 1024, nameof(ReceiveBufferSize), ReceiveBufferSize, "must be from 64 bytes to 1 MiB");
        Check(Backlog >= 1, nameof(Backlog), Backlog, "must be at least 1");
        Check(MaxReadBufferSize is null or >= 0, nameof(MaxReadBufferSize), MaxReadBufferSize, "must not be negative");
        Check(MaxWriteBufferSize is null or >= 0, nameof(MaxWriteBufferSize), MaxWriteBufferSize, "must not be negative");
        Check(Enum.IsDefined(Dispatch), nameof(Dispatch), Dispatch, "must be Kernel, IncomingCpu or LeastConnections");
        Check(Enum.IsDefined(KernelEventLoop), nameof(KernelEventLoop), KernelEventLoop, "must be Off, WhereAvailable or Required");
        Check(ZeroCopySendThreshold is null or >= 1, nameof(ZeroCopySendThreshold), ZeroCopySendThreshold, "must be at least 1 byte, or null to disable");

        static bool IsPowerOfTwo(int value) => (value & (value - 1)) == 0;

        static void Check(bool ok, string name, object? value, string rule)
        {
            if (!ok)
            {
                throw new ArgumentOutOfRangeException(name, value, $"IoUringTransportOptions.{name} {rule}; it is {value}.");
            }
        }
    }
}
