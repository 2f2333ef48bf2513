using System;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Interop;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace IoUring.Transport;

/// <summary>
/// Kestrel's transport factory for io_uring: binds TCP (IPv4, IPv6, dual mode), Unix domain socket
/// and adopted-handle endpoints onto per-core rings. Where io_uring cannot run, it binds through
/// Kestrel's Sockets transport instead (unless <see cref="IoUringTransportOptions.FallbackToSockets"/>
/// is false) and logs why, once.
/// </summary>
public sealed class IoUringTransportFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    private readonly IoUringTransportOptions _options;
    private readonly ILogger _logger;
    private readonly SocketTransportFactory _sockets;
    private readonly object _groupLock = new();
    private RingGroup? _group;
    private ConnectionDispatcher? _dispatcher;
    private ConnectionDispatch _lastDispatch; // ActiveDispatch once the rings stopped
    private int _groupUsers;
    private IoUringUnavailableException? _unavailable;
    private bool _availabilityChecked;
    private int _fallbackLogged;

    /// <summary>Creates the factory; Kestrel does this through dependency injection.</summary>
    public IoUringTransportFactory(IOptions<IoUringTransportOptions> options, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _options = options.Value;
        _logger = loggerFactory.CreateLogger("IoUring.Transport");
        _sockets = new SocketTransportFactory(
            Options.Create(new SocketTransportOptions
            {
                NoDelay = _options.NoDelay,
                Backlog = _options.Backlog,
                MaxReadBufferSize = _options.MaxReadBufferSize,
                MaxWriteBufferSize = _options.MaxWriteBufferSize,
                UnsafePreferInlineScheduling = _options.UnsafePreferInlineScheduling,
            }),
            loggerFactory);
        AvailabilityCheck = CheckAvailability;
    }

    /// <summary>The running rings, if any (tests read their memory pool).</summary>
    internal RingGroup? Group => _group;

    /// <summary>Decides whether io_uring is usable; a seam so tests can play an unavailable kernel.</summary>
    internal Func<IoUringUnavailableException?> AvailabilityCheck { get; set; }

    /// <summary>The running group's connection dispatch (null while no rings run).</summary>
    internal ConnectionDispatcher? Dispatcher => _dispatcher;

    /// <summary>
    /// The connection dispatch in effect for the running rings: <see cref="IoUringTransportOptions.Dispatch"/>,
    /// or <see cref="ConnectionDispatch.Kernel"/> before any bind, after a fallback at start, or once
    /// any listener fell back to the kernel's hash (each fallback is logged with its reason). After
    /// the rings stop, the last value.
    /// </summary>
    public ConnectionDispatch ActiveDispatch => _dispatcher?.EffectiveMode ?? _lastDispatch;

    /// <summary>
    /// Whether this kernel can run an io_uring event loop written in BPF (struct io_uring_bpf_ops with the
    /// kfuncs bpf_io_uring_submit_sqes and bpf_io_uring_get_region, Linux 7.1), read from the kernel's
    /// BTF: whether <see cref="IoUringTransportOptions.KernelEventLoop"/> can run here, privileges permitting.
    /// </summary>
    public static bool IsIoUringBpfLoopAvailable => s_bpfLoopAvailable.Value;

    /// <summary>
    /// How many of the running rings run their event loop in the kernel
    /// (<see cref="IoUringTransportOptions.KernelEventLoop"/>): all of them, none (it is off, or
    /// unavailable here, which was logged with the reason), or 0 while no rings run.
    /// </summary>
    public int KernelEventLoopRings
    {
        get
        {
            RingGroup? group = _group;
            return group is null ? 0 : group.Rings.Count(r => r.RunsKernelEventLoop);
        }
    }

    private static readonly Lazy<bool> s_bpfLoopAvailable = new(() => IoUring.Bpf.IoUringBpfLoop.IsAvailable());

    /// <summary>Whether the last bind ran on io_uring (false before any bind, or after a fallback to Sockets).</summary>
    public bool IsUsingIoUring { get; private set; }

    /// <inheritdoc />
    public bool CanBind(EndPoint endpoint) => endpoint is IPEndPoint or UnixDomainSocketEndPoint or FileHandleEndPoint;

    /// <inheritdoc />
    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        RingGroup? group = AcquireGroupOrFallBack();
        if (group is null)
        {
            IsUsingIoUring = false;
            return await _sockets.BindAsync(endpoint, cancellationToken).ConfigureAwait(false);
        }

        try
        {
            IConnectionListener listener = IoUringConnectionListener.Bind(this, group, endpoint, _options, _logger);
            IsUsingIoUring = true;
            return listener;
        }
        catch
        {
            await ReleaseGroupAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The options the rings run with (the connection factory reads them too).</summary>
    internal IoUringTransportOptions TransportOptions => _options;

    internal ILogger Logger => _logger;

    /// <summary>
    /// Takes a share of the rings, starting them for the first user (a listener, or the connection
    /// factory); <see cref="ReleaseGroupAsync"/> gives it back. Null when io_uring is switched off
    /// or unavailable and the user falls back to Sockets (logged once, with the reason).
    /// </summary>
    internal RingGroup? AcquireGroupOrFallBack()
    {
        _options.Validate();
        if (!_options.Enabled)
        {
            if (Interlocked.Exchange(ref _fallbackLogged, 1) == 0)
            {
                IoUringTransportLog.DisabledByConfiguration(_logger);
            }

            return null;
        }

        try
        {
            return AcquireGroup();
        }
        catch (IoUringUnavailableException ex) when (_options.FallbackToSockets)
        {
            if (Interlocked.Exchange(ref _fallbackLogged, 1) == 0)
            {
                IoUringTransportLog.FallbackToSockets(_logger, ex.Message);
            }

            return null;
        }
    }

    private RingGroup AcquireGroup()
    {
        lock (_groupLock)
        {
            if (!_availabilityChecked)
            {
                _unavailable = AvailabilityCheck();
                _availabilityChecked = true;
            }

            if (_unavailable is not null)
            {
                throw _unavailable;
            }

            if (_group is null)
            {
                RingGroup group = RingGroup.Start(_options, _logger);
                LogKernelEventLoop(group);
                LogRingRestriction(group);
                try
                {
                    _dispatcher = ConnectionDispatcher.Start(group, _options, _logger);
                }
                catch
                {
                    group.Dispose();
                    throw;
                }

                _group = group;
            }

            _groupUsers++;
            return _group;
        }
    }

    /// <summary>A listener is gone; the last one stops the rings.</summary>
    internal async Task ReleaseGroupAsync()
    {
        RingGroup? toStop = null;
        ConnectionDispatcher? dispatcher = null;
        lock (_groupLock)
        {
            if (--_groupUsers == 0)
            {
                toStop = _group;
                dispatcher = _dispatcher;
                _lastDispatch = dispatcher?.EffectiveMode ?? ConnectionDispatch.Kernel;
                _group = null;
                _dispatcher = null;
            }
        }

        if (toStop is not null)
        {
            // Joining the ring threads blocks; keep it off the caller's thread. The dispatcher's
            // shared load map goes after the rings, which write into it.
            await Task.Run(() =>
            {
                toStop.Dispose();
                dispatcher?.Dispose();
            }).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Sets up a throwaway ring and checks what the transport needs: the opcodes (probe) and
    /// provided buffer rings. Returns null when io_uring is usable.
    /// </summary>
    private IoUringUnavailableException? CheckAvailability()
    {
        try
        {
            using Ring ring = Ring.Create(new RingOptions { SqEntries = 8 });
            // Each of the other two calls once, so that a profile that blocks only one of them
            // falls back here instead of failing later: io_uring_enter with a NOP (or every
            // connection would hang unanswered), io_uring_register with the probe.
            if (EnterRefusal(ring) is IoUringUnavailableException enterRefused)
            {
                return enterRefused;
            }

            IoUringProbe probe;
            try
            {
                probe = ring.Probe();
            }
            catch (IoUringException ex)
            {
                return IoUringAvailability.ClassifyRingCall("io_uring_register", ex.Errno);
            }

            var missing = new System.Collections.Generic.List<string>();
            foreach ((byte op, string name) in new (byte, string)[]
            {
                (IoUringConstants.Op.Accept, "ACCEPT"), (IoUringConstants.Op.Recv, "RECV"), (IoUringConstants.Op.SendMsg, "SENDMSG"),
                (IoUringConstants.Op.Read, "READ"), (IoUringConstants.Op.AsyncCancel, "ASYNC_CANCEL"), (IoUringConstants.Op.Timeout, "TIMEOUT"),
            })
            {
                if (!probe.IsSupported(op))
                {
                    missing.Add(name);
                }
            }

            if (missing.Count > 0)
            {
                return IoUringAvailability.MissingOperations(missing);
            }

            try
            {
                using var buffers = BufferRing.Create(ring, 0, 1, 64);
            }
            catch (IoUringException ex)
            {
                return IoUringAvailability.MissingOperations([$"provided buffer rings (IORING_REGISTER_PBUF_RING: errno {ex.Errno})"]);
            }

            IoUringTransportLog.RingFeatures(
                _logger,
                _options.RingCount,
                ring.Features,
                ring.SetupFlags,
                probe.HasFeature(IoUringConstants.Features.RecvSendBundle),
                probe.IsSupported(IoUringConstants.Op.SendZc));
            if (_logger.IsEnabled(LogLevel.Debug))
            {
                // Reads the kernel's BTF (a few megabytes): only when someone will see the answer.
                IoUringTransportLog.IoUringBpfLoop(_logger, IsIoUringBpfLoopAvailable ? "available" : "not available");
            }

            return null;
        }
        catch (IoUringUnavailableException ex)
        {
            return ex;
        }
    }

    /// <summary>Submits one NOP and waits for it: null when io_uring_enter works, else why not.</summary>
    private static unsafe IoUringUnavailableException? EnterRefusal(Ring ring)
    {
        ring.GetSqe()->PrepNop();
        int result;
        do
        {
            result = ring.SubmitAndWait(1);
        }
        while (result == -Errno.EINTR); // a signal cut the wait short; the NOP is in or still to come

        return result < 0 ? IoUringAvailability.ClassifyRingCall("io_uring_enter", -result) : null;
    }

    private void LogRingRestriction(RingGroup group)
    {
        // Debug, not a warning: the allowlist is hardening the user did not ask for by name, and
        // every kernel before 7.0 lacks it. One line for the group: the rings share the reason.
        RingThread[] refused = group.Rings.Where(r => r.OperationRestrictionRefusal is not null).ToArray();
        if (refused.Length > 0)
        {
            IoUringTransportLog.RingOperationsUnrestricted(_logger, refused.Length, group.Rings.Length, refused[0].OperationRestrictionRefusal!.Message);
        }
    }

    private void LogKernelEventLoop(RingGroup group)
    {
        if (_options.KernelEventLoop == KernelEventLoop.Off)
        {
            return;
        }

        RingThread[] refused = group.Rings.Where(r => r.KernelEventLoopRefusal is not null).ToArray();
        if (refused.Length > 0)
        {
            // One warning for the group: every ring is refused for the same reason in practice.
            Bpf.BpfException reason = refused[0].KernelEventLoopRefusal!;
            int logStart = reason.Message.IndexOf(" Verifier log:", StringComparison.Ordinal);
            string message = logStart < 0 ? reason.Message : reason.Message[..logStart]; // the log itself goes to Debug
            IoUringTransportLog.KernelEventLoopFallback(_logger, refused.Length, group.Rings.Length, message);
            if (reason.VerifierLog is not null)
            {
                IoUringTransportLog.KernelEventLoopVerifierLog(_logger, reason.VerifierLog);
            }
        }

        IoUringTransportLog.KernelEventLoopStarted(_logger, _options.KernelEventLoop, group.Rings.Length - refused.Length, group.Rings.Length);
    }
}
