using System;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// The transport's log events. Event ids are stable: a retired id stays reserved, never reused.
/// Names follow Kestrel's Sockets transport where the event is the same.
/// </summary>
internal static partial class IoUringTransportLog
{
    [LoggerMessage(1, LogLevel.Debug, "Connection id \"{ConnectionId}\" received FIN.", EventName = "ConnectionReadFin")]
    public static partial void ConnectionReadFin(ILogger logger, string connectionId);

    [LoggerMessage(2, LogLevel.Debug, "Connection id \"{ConnectionId}\" reset.", EventName = "ConnectionReset")]
    public static partial void ConnectionReset(ILogger logger, string connectionId);

    [LoggerMessage(3, LogLevel.Debug, "Connection id \"{ConnectionId}\" paused receiving: the application is MaxReadBufferSize behind.", EventName = "ConnectionPause")]
    public static partial void ReceivePaused(ILogger logger, string connectionId);

    [LoggerMessage(4, LogLevel.Debug, "Connection id \"{ConnectionId}\" resumed receiving.", EventName = "ConnectionResume")]
    public static partial void ReceiveResumed(ILogger logger, string connectionId);

    [LoggerMessage(5, LogLevel.Debug, "Connection id \"{ConnectionId}\" failed.", EventName = "ConnectionError")]
    public static partial void ConnectionError(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(6, LogLevel.Error, "io_uring ring {Ring} failed; its connections are aborted.", EventName = "RingFailed")]
    public static partial void RingFailed(ILogger logger, int ring, Exception exception);

    [LoggerMessage(7, LogLevel.Warning, "Accept failed with errno {Errno}; retrying in {DelayMs} ms.", EventName = "AcceptBackoff")]
    public static partial void AcceptBackoff(ILogger logger, int errno, double delayMs);

    [LoggerMessage(8, LogLevel.Warning, "io_uring is unavailable, serving on the Sockets transport instead: {Reason}", EventName = "FallbackToSockets")]
    public static partial void FallbackToSockets(ILogger logger, string reason);

    [LoggerMessage(9, LogLevel.Warning, "io_uring ring {Ring} did not stop within the timeout; connections are still open on it.", EventName = "RingStopTimedOut")]
    public static partial void RingStopTimedOut(ILogger logger, int ring);

    [LoggerMessage(10, LogLevel.Error, "Setting up an accepted connection failed; it was closed.", EventName = "ConnectionSetupFailed")]
    public static partial void ConnectionSetupFailed(ILogger logger, Exception exception);

    [LoggerMessage(11, LogLevel.Error, "Stopping a listening socket failed.", EventName = "ListenerStopFailed")]
    public static partial void ListenerStopFailed(ILogger logger, Exception exception);

    [LoggerMessage(12, LogLevel.Error, "A ConnectionClosed callback of connection id \"{ConnectionId}\" threw.", EventName = "ConnectionClosedCallbackFailed")]
    public static partial void ConnectionClosedCallbackFailed(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(13, LogLevel.Debug, "io_uring transport: {RingCount} rings, kernel features 0x{Features:X}, setup flags 0x{SetupFlags:X}, recv bundles {Bundles}, SEND_ZC {SendZc}.", EventName = "RingFeatures")]
    public static partial void RingFeatures(ILogger logger, int ringCount, uint features, uint setupFlags, bool bundles, bool sendZc);

    [LoggerMessage(14, LogLevel.Information, "io_uring is switched off by configuration (Enabled = false); serving on the Sockets transport.", EventName = "DisabledByConfiguration")]
    public static partial void DisabledByConfiguration(ILogger logger);

    [LoggerMessage(15, LogLevel.Error, "The listening socket of io_uring ring {Ring} failed handling a completion; accepting resumes after a pause.", EventName = "ListenerError")]
    public static partial void ListenerError(ILogger logger, int ring, Exception exception);

    [LoggerMessage(16, LogLevel.Warning, "Connection dispatch {Requested} is unavailable; the kernel's reuseport hash chooses each connection's ring instead: {Reason}", EventName = "DispatchFallback")]
    public static partial void DispatchFallback(ILogger logger, ConnectionDispatch requested, string reason);

    [LoggerMessage(17, LogLevel.Debug, "Connection dispatch: {Requested} requested, {Mode} in effect over {RingCount} rings.", EventName = "DispatchStarted")]
    public static partial void DispatchStarted(ILogger logger, ConnectionDispatch requested, ConnectionDispatch mode, int ringCount);

    [LoggerMessage(18, LogLevel.Debug, "io_uring BPF event loop (struct io_uring_bpf_ops with kfuncs bpf_io_uring_submit_sqes and bpf_io_uring_get_region, Linux 7.1): {Availability} in this kernel's BTF.", EventName = "IoUringBpfLoop")]
    public static partial void IoUringBpfLoop(ILogger logger, string availability);

    [LoggerMessage(19, LogLevel.Warning, "IncomingCpu dispatch could not pin the rings to CPUs; connections still go to the ring of the CPU that took their SYN, but that ring may run on another CPU: {Reason}", EventName = "RingPinningFailed")]
    public static partial void RingPinningFailed(ILogger logger, string reason);

    [LoggerMessage(20, LogLevel.Debug, "Connection id \"{ConnectionId}\" sending FIN because: \"{Reason}\"", EventName = "ConnectionWriteFin")]
    public static partial void ConnectionWriteFin(ILogger logger, string connectionId, string reason);

    [LoggerMessage(21, LogLevel.Debug, "Connection id \"{ConnectionId}\" sending RST because: \"{Reason}\"", EventName = "ConnectionWriteRst")]
    public static partial void ConnectionWriteRst(ILogger logger, string connectionId, string reason);

    [LoggerMessage(22, LogLevel.Warning, "IncomingCpu dispatch with {RingCount} rings on {CpuCount} allowed CPUs: each CPU's connections go to one ring, so rings beyond the CPU count get no TCP connections and with fewer rings some rings serve several CPUs. Set RingCount to the CPU count.", EventName = "RingCountDiffersFromCpus")]
    public static partial void RingCountDiffersFromCpus(ILogger logger, int ringCount, int cpuCount);

    [LoggerMessage(23, LogLevel.Warning, "The kernel event loop (KernelEventLoop WhereAvailable) is unavailable; {RingCount} of {TotalRings} rings run their loop in user space instead: {Reason}", EventName = "KernelEventLoopFallback")]
    public static partial void KernelEventLoopFallback(ILogger logger, int ringCount, int totalRings, string reason);

    [LoggerMessage(24, LogLevel.Debug, "The kernel's verifier refused the event loop program:\n{VerifierLog}", EventName = "KernelEventLoopVerifierLog")]
    public static partial void KernelEventLoopVerifierLog(ILogger logger, string verifierLog);

    [LoggerMessage(25, LogLevel.Debug, "Kernel event loop: {KernelEventLoop} requested, running on {RingCount} of {TotalRings} rings.", EventName = "KernelEventLoopStarted")]
    public static partial void KernelEventLoopStarted(ILogger logger, KernelEventLoop kernelEventLoop, int ringCount, int totalRings);

    [LoggerMessage(26, LogLevel.Debug, "Ring operations are not restricted on {RingCount} of {TotalRings} rings (RestrictRingOperations; io_uring BPF filters, Linux 7.0): {Reason}", EventName = "RingOperationsUnrestricted")]
    public static partial void RingOperationsUnrestricted(ILogger logger, int ringCount, int totalRings, string reason);

    [LoggerMessage(27, LogLevel.Debug, "Ring {RingIndex} could not hand a connection to a less loaded ring (IORING_OP_MSG_RING failed with errno {Errno}); it serves the connection itself.", EventName = "ConnectionHandoverFailed")]
    public static partial void ConnectionHandoverFailed(ILogger logger, int ringIndex, int errno);
}
