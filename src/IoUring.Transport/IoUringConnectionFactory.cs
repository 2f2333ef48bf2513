using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;

namespace IoUring.Transport;

/// <summary>
/// Outgoing connections on the transport's rings: each connect is an <c>IORING_OP_CONNECT</c> on
/// one ring, and the connection then receives and sends exactly as an accepted one does (multishot
/// receive into provided buffers, one <c>sendmsg</c> per flush). It shares the rings of the
/// <see cref="IoUringTransportFactory"/> it is made from, so a proxy's inbound and outbound
/// connections run on the same rings. Where io_uring cannot run it connects with
/// <see cref="Socket"/> instead (unless <see cref="IoUringTransportOptions.FallbackToSockets"/> is
/// false), after the one warning the transport logs. Register it with
/// <c>services.AddIoUringConnectionFactory()</c>; <see cref="ConnectStreamAsync"/> puts
/// <see cref="HttpClient"/> (and so YARP) on it.
/// </summary>
public sealed class IoUringConnectionFactory : IConnectionFactory, IAsyncDisposable, IDisposable
{
    private readonly IoUringTransportFactory _transport;
    private readonly IoUringTransportOptions _options;
    private readonly object _lock = new();
    private readonly HashSet<ConnectionContext> _live = []; // under _lock: open connections it made, aborted at the dispose
    private readonly CancellationTokenSource _disposing = new();
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _users = 1;          // under _lock: the factory itself and each connect under way; the last one out releases the rings
    private bool _disposed;          // under _lock
    private RingGroup? _group;
    private PipeOptions? _outputOptions;
    private SocketConnectionContextFactory? _sockets;

    /// <summary>
    /// Creates a factory on <paramref name="transport"/>'s rings. Create it before the server starts
    /// (as <c>AddIoUringConnectionFactory</c> does): the rings' opcode allowlist then includes connect.
    /// </summary>
    /// <param name="transport">The transport whose rings and options the connections use.</param>
    public IoUringConnectionFactory(IoUringTransportFactory transport)
    {
        ArgumentNullException.ThrowIfNull(transport);
        _transport = transport;
        _options = transport.TransportOptions;
        _options.AllowConnect = true;
    }

    /// <summary>Whether connections are made on io_uring (false before the first connect, or when it fell back to Sockets).</summary>
    public bool IsUsingIoUring { get; private set; }

    /// <summary>
    /// Connects to <paramref name="endpoint"/>: an <see cref="IPEndPoint"/>, a
    /// <see cref="UnixDomainSocketEndPoint"/>, or a <see cref="DnsEndPoint"/> (resolved, then each
    /// address tried in turn, as Socket.ConnectAsync does). Errors are the
    /// <see cref="SocketException"/> Socket.ConnectAsync throws (ConnectionRefused,
    /// NetworkUnreachable, HostUnreachable, TimedOut, AddressNotAvailable for a Unix socket path
    /// that does not exist); cancelling <paramref name="cancellationToken"/> (a connect timeout)
    /// throws <see cref="OperationCanceledException"/>. Disposing the connection closes it.
    /// </summary>
    /// <param name="endpoint">Where to connect.</param>
    /// <param name="cancellationToken">Cancels the connect.</param>
    /// <returns>The connection.</returns>
    public async ValueTask<ConnectionContext> ConnectAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (endpoint is not (IPEndPoint or UnixDomainSocketEndPoint or DnsEndPoint))
        {
            throw new NotSupportedException($"{endpoint.GetType()} is not supported: connect to an IPEndPoint, a DnsEndPoint or a UnixDomainSocketEndPoint.");
        }

        cancellationToken.ThrowIfCancellationRequested();
        Enter();
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposing.Token);
            ConnectionContext connection;
            try
            {
                connection = endpoint is DnsEndPoint dns
                    ? await ConnectToAnyAsync(dns, linked.Token).ConfigureAwait(false)
                    : await ConnectOneAsync(endpoint, linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException ex) when (cancellationToken.IsCancellationRequested)
            {
                // The caller's token, so that callers that check whose cancellation it was (as
                // SocketsHttpHandler does to report its ConnectTimeout) recognise theirs.
                throw new OperationCanceledException(ex.Message, ex, cancellationToken);
            }
            catch (OperationCanceledException) when (_disposing.IsCancellationRequested)
            {
                throw new ObjectDisposedException(nameof(IoUringConnectionFactory), "The connection factory was disposed while connecting.");
            }

            Track(connection);
            return connection;
        }
        finally
        {
            Leave();
        }
    }

    /// <summary>
    /// A <see cref="SocketsHttpHandler.ConnectCallback"/> that opens the handler's connections on
    /// io_uring: <c>new SocketsHttpHandler { ConnectCallback = factory.ConnectStreamAsync }</c>. TLS,
    /// HTTP/2 and the rest stay the handler's.
    /// </summary>
    /// <param name="context">The handler's connect context (its <see cref="DnsEndPoint"/>).</param>
    /// <param name="cancellationToken">Cancels the connect (the handler's ConnectTimeout among others).</param>
    /// <returns>A stream over the connection; disposing it closes the connection.</returns>
    public async ValueTask<Stream> ConnectStreamAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        ConnectionContext connection = await ConnectAsync(context.DnsEndPoint, cancellationToken).ConfigureAwait(false);
        return new ConnectionStream(connection);
    }

    private async Task<ConnectionContext> ConnectToAnyAsync(DnsEndPoint endpoint, CancellationToken cancellationToken)
    {
        IPAddress[] addresses = await Dns.GetHostAddressesAsync(endpoint.Host, endpoint.AddressFamily, cancellationToken).ConfigureAwait(false);
        if (addresses.Length == 0)
        {
            throw new SocketException((int)SocketError.HostNotFound, $"{endpoint.Host} has no address.");
        }

        SocketException? last = null;
        foreach (IPAddress address in addresses)
        {
            try
            {
                return await ConnectOneAsync(new IPEndPoint(address, endpoint.Port), cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException ex)
            {
                last = ex; // the next address, as Socket.ConnectAsync(DnsEndPoint) goes on
            }
        }

        throw last!;
    }

    private async Task<ConnectionContext> ConnectOneAsync(EndPoint endpoint, CancellationToken cancellationToken)
    {
        if (ChooseRings() is not RingGroup group)
        {
            return await ConnectWithSocketAsync(endpoint, cancellationToken).ConfigureAwait(false);
        }

        return await RingConnect.ConnectAsync(ChooseRing(group), endpoint, _outputOptions!, _options, _transport.Logger, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The rings, taken on the first connect; null when connections go through Sockets.</summary>
    private RingGroup? ChooseRings()
    {
        lock (_lock)
        {
            if (_group is null && _sockets is null) // rings or Sockets not decided yet: the first connect
            {
                // Throws (and is tried again on the next connect) when io_uring is unavailable and
                // Sockets are not allowed, or the rings fail to start.
                _group = _transport.AcquireGroupOrFallBack();
                if (_group is not null)
                {
                    _outputOptions = IoUringConnection.CreateOutputOptions(_group.MemoryPool, _options);
                }
                else
                {
                    _sockets = new SocketConnectionContextFactory(
                        new SocketConnectionFactoryOptions
                        {
                            MaxReadBufferSize = _options.MaxReadBufferSize,
                            MaxWriteBufferSize = _options.MaxWriteBufferSize,
                            UnsafePreferInlineScheduling = _options.UnsafePreferInlineScheduling,
                        },
                        _transport.Logger);
                }

                IsUsingIoUring = _group is not null;
            }

            return _group;
        }
    }

    /// <summary>The caller's own ring when it runs on one (a proxy answering on the ring that took the request), otherwise the next in turn.</summary>
    private static RingThread ChooseRing(RingGroup group)
    {
        foreach (RingThread ring in group.Rings)
        {
            if (ring.IsOnRingThread && !ring.HasEnded)
            {
                return ring;
            }
        }

        return group.NextRing();
    }

    private async Task<ConnectionContext> ConnectWithSocketAsync(EndPoint endpoint, CancellationToken cancellationToken)
    {
        var socket = endpoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = _options.NoDelay };
        try
        {
            await socket.ConnectAsync(endpoint, cancellationToken).ConfigureAwait(false);
            return _sockets!.Create(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private void Enter()
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _users++;
        }
    }

    private void Leave()
    {
        bool last;
        lock (_lock)
        {
            last = --_users == 0;
        }

        if (last)
        {
            _ = ReleaseAsync();
        }
    }

    private void Track(ConnectionContext connection)
    {
        lock (_lock)
        {
            if (!_disposed)
            {
                _live.Add(connection);
                // Forgotten once it closes (a token already fired runs this at once, under the same lock).
                connection.ConnectionClosed.UnsafeRegister(
                    static state =>
                    {
                        var (factory, closed) = ((IoUringConnectionFactory, ConnectionContext))state!;
                        factory.Forget(closed);
                    },
                    (this, connection));
                return;
            }
        }

        // Disposed while this connect was under way (and still succeeded): the caller gets it, aborted.
        connection.Abort(new ConnectionAbortedException("The connection factory was disposed."));
    }

    private void Forget(ConnectionContext connection)
    {
        lock (_lock)
        {
            _live.Remove(connection);
        }
    }

    private async Task ReleaseAsync()
    {
        try
        {
            if (_group is not null)
            {
                await _transport.ReleaseGroupAsync().ConfigureAwait(false); // the last user's release stops the rings, once their connections end
            }

            _sockets?.Dispose();
            _disposing.Dispose();
            _released.TrySetResult();
        }
        catch (Exception ex)
        {
            _released.TrySetException(ex);
        }
    }

    /// <summary>
    /// Aborts the connections it made that are still open, cancels connects under way, and gives
    /// the rings back (they stop once no listener or connection uses them).
    /// </summary>
    /// <returns>A task that completes when the rings are given back.</returns>
    public async ValueTask DisposeAsync()
    {
        ConnectionContext[] live = [];
        bool first;
        lock (_lock)
        {
            first = !_disposed;
            if (first)
            {
                _disposed = true;
                live = [.. _live];
                _live.Clear();
            }
        }

        if (first)
        {
            _disposing.Cancel(); // connects under way end with ObjectDisposedException
            foreach (ConnectionContext connection in live)
            {
                connection.Abort(new ConnectionAbortedException("The connection factory was disposed."));
            }

            Leave(); // the factory's own share; the last connect under way gives back the rings if one still runs
        }

        await _released.Task.ConfigureAwait(false);
    }

    /// <inheritdoc cref="DisposeAsync"/>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}
