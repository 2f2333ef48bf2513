using System;
using System.IO;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using System.Threading.Channels;
using System.Threading.Tasks;
using IoUring.Interop;
using IoUring.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>Kestrel's view of one bound endpoint: connections accepted by any ring, in arrival order.</summary>
internal sealed class IoUringConnectionListener : IConnectionListener
{
    private readonly Channel<IoUringConnection> _accepted = Channel.CreateUnbounded<IoUringConnection>(new UnboundedChannelOptions
    {
        SingleReader = false,
        SingleWriter = false,
    });

    private readonly IoUringTransportFactory _factory;
    private readonly RingGroup _group;
    private readonly IoUringTransportOptions _options;
    private readonly PipeOptions _outputOptions; // one for all of the listener's connections, as Kestrel's Sockets transport does
    private IPEndPoint? _localEndPoint;           // bound to one address: every accepted connection's local end point; null: ask each (wildcard)
    private readonly ILogger _logger;
    private RingListener[] _ringListeners = [];
    private ListenerPrograms? _dispatchPrograms; // LeastConnections: closed after the sockets
    private bool _dispatched;                     // a dispatch program chose the ring of each connection
    private int _placementId;                     // its id for the kernel event loops' placement (RingPlacement); 0: none
    private readonly object _unbindLock = new();
    private int _disposed;
    private int _failedRingListeners;
    private Task? _unbindTask;

    private IoUringConnectionListener(IoUringTransportFactory factory, RingGroup group, EndPoint endPoint, IoUringTransportOptions options, ILogger logger)
    {
        _factory = factory;
        _group = group;
        EndPoint = endPoint;
        _options = options;
        _logger = logger;
        _outputOptions = IoUringConnection.CreateOutputOptions(group.MemoryPool, options);
    }

    public EndPoint EndPoint { get; private set; }

    /// <summary>Binds <paramref name="endPoint"/> on every ring (TCP) or on one ring that spreads connections (Unix, handles).</summary>
    public static IoUringConnectionListener Bind(IoUringTransportFactory factory, RingGroup group, EndPoint endPoint, IoUringTransportOptions options, ILogger logger)
    {
        var listener = new IoUringConnectionListener(factory, group, endPoint, options, logger);
        listener.BindSockets(endPoint);
        return listener;
    }

    private void BindSockets(EndPoint endPoint)
    {
        RingThread[] rings = _group.Rings;
        switch (endPoint)
        {
            case IPEndPoint ip:
            {
                var fds = new int[rings.Length];
                int bound = 0;
                try
                {
                    if (ip.Port != 0)
                    {
                        // SO_REUSEPORT would let us share a port another process of this user already
                        // serves; Kestrel's Sockets transport reports the port as in use. So do we.
                        EnsurePortIsFree(ip);
                    }

                    for (; bound < rings.Length; bound++)
                    {
                        fds[bound] = LinuxSocket.CreateListener(ip, _options.Backlog, reusePort: true);
                        if (bound == 0)
                        {
                            // Port 0: the kernel chose; every other ring joins that port's group.
                            ip = (IPEndPoint)LinuxSocket.GetLocalEndPoint(fds[0])!;
                            EndPoint = ip;
                        }
                    }

                    // The rings' listeners listen in ring order, so the group numbers them in ring order
                    // (socket(7), SO_ATTACH_REUSEPORT_CBPF): the IncomingCpu program relies on it.
                    _dispatchPrograms = _factory.Dispatcher?.Attach(fds);
                    // A connection accepted on a specific address has that address and port as its
                    // own; share the object and save a getsockname per connection. A wildcard
                    // listener's connections each have the address they were reached on.
                    if (!ip.Address.Equals(IPAddress.Any) && !ip.Address.Equals(IPAddress.IPv6Any))
                    {
                        _localEndPoint = ip;
                    }

                    _dispatched = _dispatchPrograms is not null;
                }
                catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
                {
                    CloseAll(fds, bound);
                    throw new AddressInUseException(ex.Message, ex);
                }
                catch
                {
                    CloseAll(fds, bound);
                    throw;
                }

                _ringListeners = new RingListener[rings.Length];
                for (int i = 0; i < rings.Length; i++)
                {
                    _ringListeners[i] = new RingListener(rings[i], fds[i], ownsFd: true, this, _group, distribute: false, _logger);
                }

                break;
            }

            case UnixDomainSocketEndPoint unix:
            {
                int fd;
                try
                {
                    fd = LinuxSocket.CreateListener(unix, _options.Backlog, reusePort: false);
                }
                catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
                {
                    throw new AddressInUseException(ex.Message, ex);
                }

                _ringListeners = [new RingListener(_group.NextRing(), fd, ownsFd: true, this, _group, distribute: true, _logger)];
                break;
            }

            case FileHandleEndPoint handle:
            {
                int fd = checked((int)handle.FileHandle);
                if (!LinuxSocket.IsListening(fd))
                {
                    throw new NotSupportedException($"The handle {fd} is not a listening socket; the io_uring transport only adopts listening sockets.");
                }

                EndPoint = handle;
                _ringListeners = [new RingListener(_group.NextRing(), fd, ownsFd: true, this, _group, distribute: true, _logger)];
                break;
            }

            default:
                throw new NotSupportedException($"The io_uring transport cannot bind {endPoint.GetType().Name} endpoints.");
        }

        // The kernel event loops place this endpoint's connections by load, unless a dispatch
        // program chose each TCP connection's ring already (IncomingCpu, LeastConnections): moving
        // it would undo that choice.
        if (_group.Placement is { Active: true } placement && !_dispatched)
        {
            _placementId = placement.Register(this);
            foreach (RingListener ringListener in _ringListeners)
            {
                ringListener.PlacementId = _placementId;
            }
        }

        foreach (RingListener ringListener in _ringListeners)
        {
            ringListener.Start();
        }
    }

    private static void EnsurePortIsFree(IPEndPoint ip)
    {
        int probe = LinuxSocket.Create(ip.AddressFamily);
        try
        {
            LinuxSocket.SetReuseAddress(probe, true);
            if (ip.AddressFamily == AddressFamily.InterNetworkV6)
            {
                LinuxSocket.SetDualMode(probe, ip.Address.Equals(IPAddress.IPv6Any));
            }

            LinuxSocket.Bind(probe, ip);
        }
        finally
        {
            LinuxSocket.Close(probe);
        }
    }

    private static void CloseAll(int[] fds, int count)
    {
        for (int i = 0; i < count; i++)
        {
            Libc.Close(fds[i]);
        }
    }

    /// <summary>
    /// One of this endpoint's listening sockets is gone with its ring (any thread). Once all are,
    /// accepting fails, so Kestrel reports the endpoint dead instead of waiting on it forever.
    /// </summary>
    public void RingListenerFailed(Exception error)
    {
        if (Interlocked.Increment(ref _failedRingListeners) == _ringListeners.Length)
        {
            _accepted.Writer.TryComplete(new IOException($"Every io_uring ring serving {EndPoint} has failed; no more connections are accepted on it.", error));
        }
    }

    /// <summary>
    /// A ring accepted <paramref name="fd"/> (ring thread). <paramref name="armed"/> is the slot
    /// whose receive the kernel event loop armed on it already, or none.
    /// </summary>
    public void OnAccepted(RingThread ring, int fd, RingSlot armed)
    {
        IoUringConnection connection;
        try
        {
            if (_dispatched)
            {
                ConnectionDispatcher.OnAccepted(ring);
            }

            if (_options.TestHooks?.TakeConnectionSetupFailure() == true)
            {
                throw new InvalidOperationException("A connection setup failure for a test (TransportTestHooks.FailConnectionSetups).");
            }

            connection = IoUringConnection.Start(ring, fd, _localEndPoint, _outputOptions, _options, _logger, armed: armed.IsAssigned ? armed : null);
        }
        catch (Exception ex)
        {
            IoUringTransportLog.ConnectionSetupFailed(_logger, ex);
            Libc.Close(fd);
            if (armed.IsAssigned)
            {
                ring.AbandonArmedReceive(armed); // the closed descriptor's receive lives on until cancelled
            }

            return;
        }

        if (!_accepted.Writer.TryWrite(connection))
        {
            // Unbound meanwhile: nobody will accept it.
            connection.Abort(new ConnectionAbortedException("The listener was unbound."));
            _ = connection.DisposeAsync().AsTask();
        }
    }

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (await _accepted.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (_accepted.Reader.TryRead(out IoUringConnection? connection))
            {
                return connection;
            }
        }

        return null;
    }

    /// <summary>
    /// Stops accepting. A cancelled <paramref name="cancellationToken"/> ends the wait, not the
    /// unbind, and throws nothing: Kestrel's Dispose without a stop passes an already-cancelled
    /// token, and Kestrel's Sockets transport, whose unbind is one synchronous close, never throws
    /// there. What is left finishes in the background; <see cref="DisposeAsync"/> waits for it.
    /// </summary>
    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        Task unbind;
        lock (_unbindLock)
        {
            unbind = _unbindTask ??= UnbindCoreAsync();
        }

        if (unbind.IsCompleted || !cancellationToken.CanBeCanceled)
        {
            return new ValueTask(unbind);
        }

        return new ValueTask(WaitForUnbindAsync(unbind, cancellationToken));
    }

    private static async Task WaitForUnbindAsync(Task unbind, CancellationToken cancellationToken)
    {
        try
        {
            await unbind.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stop waiting; the unbind goes on.
        }
    }

    private async Task UnbindCoreAsync()
    {
        foreach (RingListener ringListener in _ringListeners)
        {
            ringListener.Stop();
        }

        foreach (RingListener ringListener in _ringListeners)
        {
            try
            {
                await ringListener.Stopped.ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                IoUringTransportLog.ListenerStopFailed(_logger, ex);
            }
        }

        if (_placementId != 0)
        {
            // After every accept has ended: a hand-over still in flight finds no listener, and its
            // target closes the descriptor.
            _group.Placement!.Unregister(_placementId);
        }

        _dispatchPrograms?.Dispose();
        _accepted.Writer.TryComplete();
        DeleteUnixSocketFile();
    }

    /// <summary>
    /// A Unix socket bound to a path leaves a file behind; .NET's Socket deletes it when the listener
    /// is disposed, so Kestrel on Sockets does, and so do we. Abstract names have no file.
    /// </summary>
    private void DeleteUnixSocketFile()
    {
        if (EndPoint is not UnixDomainSocketEndPoint unix)
        {
            return;
        }

        Span<byte> sockaddr = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.Write(unix, sockaddr);
        ReadOnlySpan<byte> path = sockaddr[2..length];
        if (path.IsEmpty || path[0] == 0)
        {
            return; // abstract or unnamed
        }

        int end = path.IndexOf((byte)0);
        try
        {
            File.Delete(Encoding.UTF8.GetString(end >= 0 ? path[..end] : path));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            IoUringTransportLog.ListenerStopFailed(_logger, ex);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await UnbindAsync().ConfigureAwait(false);
        while (_accepted.Reader.TryRead(out IoUringConnection? connection))
        {
            connection.Abort(new ConnectionAbortedException("The listener was disposed before the connection was accepted."));
            await connection.DisposeAsync().ConfigureAwait(false);
        }

        await _factory.ReleaseGroupAsync().ConfigureAwait(false);
    }
}
