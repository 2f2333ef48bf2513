using System;
using System.Buffers;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Interop;
using IoUring.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// One accepted connection, owned by one ring. The ring thread receives into <c>Transport.Input</c>
/// and sends what the send loop hands it; the connection's processing task ties the two halves
/// and the close together the way Kestrel's Sockets transport does: when the send loop ends the
/// socket is shut down, which ends the receive side, and once both are done the ring closes the fd.
/// </summary>
internal sealed partial class IoUringConnection : ConnectionContext, IRingCompletionHandler, IRingWork,
    IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature, IMemoryPoolFeature,
    IConnectionLifetimeFeature, IConnectionEndPointFeature, IConnectionSocketFeature, IReceiveBufferOwner, IReceiveBufferWaiter, IDuplexPipe
{
    private const int OpShutdown = 1;
    private const int OpClose = 2;
    private const int OpResumeReceive = 3;
    private const int OpSend = 4;

    private readonly RingThread _ring;
    private readonly int _fd;
    private readonly RingSlot _slot;
    private readonly ILogger _logger;
    private const int MaxHeldRingBuffers = 16; // provided buffers one connection may hold before receives are copied

    private readonly ReceivePipeReader _reader; // ring thread appends, application reads
    private readonly long _maxReadBufferSize;   // 0: unlimited
    private readonly long _resumeThreshold;
    private readonly Pipe _output;  // application writes, send loop reads
    private readonly CancellationTokenSource _connectionClosedTokenSource = new();
    private readonly TaskCompletionSource _receiveDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _ringClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _connectionClosedFired = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _shutdownLock = new();

    private IDictionary<object, object?>? _items;
    private string? _connectionId;
    private Socket? _socket;
    private Task _processing = Task.CompletedTask;

    // Shutdown state: written under _shutdownLock by whichever thread ends the connection first.
    private bool _shutdownStarted;
    private bool _abortive;                 // reset (RST) rather than FIN
    private volatile Exception? _shutdownReason;

    // Ring-thread state.
    private bool _shutdownRequested;        // the ring has acted on the shutdown
    private bool _closeRequested;           // both halves are done; close once nothing is in flight
    private bool _closed;                   // the fd is closed and the slot freed
    private int _sendsInFlight;             // send SQEs whose CQE (and ZC notification) has not arrived

    private IoUringConnection(RingThread ring, int fd, EndPoint? localEndPoint, EndPoint? remoteEndPoint,
        PipeOptions outputOptions, IoUringTransportOptions options, ILogger logger)
    {
        _ring = ring;
        _fd = fd;
        _logger = logger;
        MemoryPool = outputOptions.Pool;
        LocalEndPoint = localEndPoint;
        RemoteEndPoint = remoteEndPoint;
        _slot = ring.AllocateSlot(this);

        long maxRead = options.MaxReadBufferSize ?? 0;
        // Input: the ring thread appends the received buffers; the application's read continuations
        // run on the thread pool unless it opted into the ring thread.
        _maxReadBufferSize = maxRead;
        _resumeThreshold = maxRead > 0 ? maxRead / 2 : long.MaxValue;
        _reader = new ReceivePipeReader(this, _resumeThreshold, options.UnsafePreferInlineScheduling);
        _output = new Pipe(outputOptions);
        // The connection is its own duplex pipe and feature collection (IoUringConnection.Features.cs):
        // per idle connection that is a DuplexPipe, a FeatureCollection and its dictionary fewer.
        Transport = this;
        ConnectionClosed = _connectionClosedTokenSource.Token;
        InitializeSend();
    }

    /// <summary>
    /// The output pipe's options, created once per listener: the application writes; the send loop
    /// reads on the thread pool; the application's flush continuations run on the thread pool unless
    /// it opted into the ring thread.
    /// </summary>
    public static PipeOptions CreateOutputOptions(MemoryPool<byte> memoryPool, IoUringTransportOptions options)
    {
        PipeScheduler applicationScheduler = options.UnsafePreferInlineScheduling ? PipeScheduler.Inline : PipeScheduler.ThreadPool;
        long maxWrite = options.MaxWriteBufferSize ?? 0;
        return new PipeOptions(memoryPool, PipeScheduler.ThreadPool, applicationScheduler, maxWrite, maxWrite / 2, useSynchronizationContext: false);
    }

    public override string ConnectionId
    {
        get => _connectionId ??= CorrelationIdGenerator.GetNextId();
        set => _connectionId = value;
    }

    public override IFeatureCollection Features => this;

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new Dictionary<object, object?>();
        set => _items = value;
    }

    public override IDuplexPipe Transport { get; set; }

    public MemoryPool<byte> MemoryPool { get; }

    public override CancellationToken ConnectionClosed { get; set; }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    /// <summary>The ring that owns this connection (tests check which one dispatch chose, or which one failed).</summary>
    internal RingThread Ring => _ring;

    /// <summary>
    /// A <see cref="System.Net.Sockets.Socket"/> over the connection's descriptor, for socket
    /// options. It does not own the descriptor and must not be used after the connection closes.
    /// </summary>
    public Socket Socket => _socket ??= new Socket(new SafeSocketHandle(_fd, ownsHandle: false));

    /// <summary>
    /// Creates the connection on its ring thread, arms its receive and starts its processing.
    /// <paramref name="localEndPoint"/> is the listener's own end point when it is bound to one
    /// address, or null to read it from the socket.
    /// </summary>
    public static IoUringConnection Start(RingThread ring, int fd, EndPoint? localEndPoint, PipeOptions outputOptions, IoUringTransportOptions options, ILogger logger)
    {
        AddressFamily family = LinuxSocket.GetAddressFamily(fd);
        if (options.NoDelay && family is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
        {
            LinuxSocket.SetNoDelay(fd, true);
        }

        // Read once, here: once the fd is closed its number may belong to another socket.
        EndPoint? local = localEndPoint ?? LinuxSocket.GetLocalEndPoint(fd);
        EndPoint? remote;
        try
        {
            remote = LinuxSocket.GetRemoteEndPoint(fd);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.NotConnected)
        {
            remote = null; // reset before we looked: the first receive reports it and the connection ends
        }
        var connection = new IoUringConnection(ring, fd, local, remote, outputOptions, options, logger);
        try
        {
            connection.ArmReceive();
        }
        catch
        {
            ring.FreeSlot(connection._slot); // the caller closes the fd; no SQE of ours names it
            throw;
        }

        ring.ConnectionsAccepted++;
        ring.ActiveConnections++;
        connection._processing = connection.RunAsync();
        return connection;
    }

    public override void Abort(ConnectionAbortedException abortReason)
    {
        // Kestrel closes gracefully with Abort(null) (the client half-closed, or ended a keep-alive
        // connection; FinOnError off, its default): as Kestrel's Sockets transport, no reason means
        // a FIN; a reason means a reset. Shutdown first, so this decision wins: the send loop, woken
        // by the cancel, would otherwise end the connection as if its output had completed.
        Shutdown(abortReason, abortive: abortReason is not null);
        _output.Reader.CancelPendingRead();
    }

    public override async ValueTask DisposeAsync()
    {
        _reader.Complete();
        _output.Writer.Complete();
        await _processing.ConfigureAwait(false);
        _connectionClosedTokenSource.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }

    void IConnectionLifetimeFeature.Abort() => Abort(new ConnectionAbortedException("The connection was aborted by the application via IConnectionLifetimeFeature.Abort()."));

    public void Execute(RingThread ring, int operation)
    {
        Debug.Assert(ring.IsOnRingThread && ring == _ring, "a connection's posted work runs on its own ring's thread");
        switch (operation)
        {
            case OpShutdown:
                ShutdownOnRing();
                break;
            case OpClose:
                _closeRequested = true;
                TryFinishClose();
                break;
            case OpResumeReceive:
                ResumeReceive();
                break;
            case OpSend:
                StartSend();
                break;
            case OpInputCompleted:
                StopReceiving();
                break;
        }
    }

    public void OnCompletion(RingThread ring, OpKind kind, in Cqe cqe)
    {
        Debug.Assert(ring.IsOnRingThread && ring == _ring, "a connection's completions arrive on its own ring's thread");
        switch (kind)
        {
            case OpKind.Recv:
                OnReceive(in cqe);
                break;
            case OpKind.Send:
                OnSend(in cqe);
                break;
        }

        TryFinishClose();
    }

    /// <summary>The ring thread died: end everything without it (ring thread, in its last moments).</summary>
    public void OnRingFailed(Exception error)
    {
        var reason = new ConnectionAbortedException("The io_uring ring thread failed.", error);
        lock (_shutdownLock)
        {
            _shutdownStarted = true;
            _abortive = true;
            _shutdownReason ??= reason;
        }

        _recvArmed = false;
        EndReceive(_shutdownReason);
        // The ring's teardown ends what is in flight on its own time: a zero-copy send's data may
        // still be read after this, so its blocks are retired rather than given back to the pool.
        FailPendingSend(_shutdownReason);
        _output.Reader.CancelPendingRead(); // the send loop must not wait for output nobody will send
        if (!_closed)
        {
            _closed = true;
            _ = LinuxSocket.TrySetLingerZero(_fd); // the close resets, as an abort does
            Libc.Close(_fd);
            _ringClosed.TrySetResult();
        }
    }

    /// <summary>
    /// Handling this connection threw on the ring thread (a bug, or a ring that could not take an
    /// SQE): log it and end this connection only, here and now, without relying on ring operations
    /// that may have been lost.
    /// </summary>
    public void OnFault(Exception error)
    {
        IoUringTransportLog.ConnectionError(_logger, ConnectionId, error);
        lock (_shutdownLock)
        {
            if (!_shutdownStarted)
            {
                _shutdownStarted = true;
                _abortive = true;
                _shutdownReason = new ConnectionAbortedException("The io_uring transport failed handling this connection.", error);
            }
        }

        if (_closed)
        {
            return;
        }

        _shutdownRequested = true;
        try
        {
            ResetAndCancelInFlight();
        }
        catch (Exception)
        {
            // The ring cannot take the cancel either: what is in flight ends when the peer or the kernel ends it.
        }

        EndReceive(_shutdownReason); // later receive completions find the input done and give their buffers back
        if (_sendActive && _sendsInFlight == 0)
        {
            CompleteSend(-Errno.ECANCELED); // the send never reached the kernel
        }

        _output.Reader.CancelPendingRead();
    }

    public void Reject(int operation, Exception error)
    {
        switch (operation)
        {
            case OpSend:
                // Queued but never issued: the send loop waits for it.
                CompleteSend(-Errno.ECANCELED);
                break;
            case OpClose:
                _ringClosed.TrySetResult(); // OnRingFailed closed the descriptor
                break;
        }
    }

    private async Task RunAsync()
    {
        try
        {
            Task sending = DoSendAsync();
            await _receiveDone.Task.ConfigureAwait(false);
            FireConnectionClosed();
            // The callbacks run before the connection may be disposed (which disposes the token source).
            await _connectionClosedFired.Task.ConfigureAwait(false);
            await sending.ConfigureAwait(false);
            _ring.Post(this, OpClose);
            await _ringClosed.Task.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            IoUringTransportLog.ConnectionError(_logger, ConnectionId, ex);
        }
    }

    private async Task DoSendAsync()
    {
        Exception? shutdownReason = null;
        Exception? unexpectedError = null;
        try
        {
            while (true)
            {
                ReadResult result = await _output.Reader.ReadAsync().ConfigureAwait(false);
                if (result.IsCanceled)
                {
                    break;
                }

                ReadOnlySequence<byte> buffer = result.Buffer;
                if (!buffer.IsEmpty)
                {
                    int sent = await SendAsync(buffer).ConfigureAwait(false);
                    _output.Reader.AdvanceTo(buffer.GetPosition(sent));
                    if (sent < buffer.Length)
                    {
                        continue; // more segments than one sendmsg carries
                    }
                }
                else
                {
                    _output.Reader.AdvanceTo(buffer.End);
                }

                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (ConnectionResetException ex)
        {
            shutdownReason = ex;
            IoUringTransportLog.ConnectionReset(_logger, ConnectionId);
        }
        catch (ConnectionAbortedException ex)
        {
            shutdownReason = ex;
        }
        catch (Exception ex)
        {
            shutdownReason = ex;
            unexpectedError = ex;
            IoUringTransportLog.ConnectionError(_logger, ConnectionId, ex);
        }
        finally
        {
            Shutdown(shutdownReason, abortive: shutdownReason is not null);
            // As Kestrel's Sockets transport: only an unexpected error reaches the application's
            // writer. A reset or an abort is already reported through the input and the lifetime
            // feature, and passing it here would have Kestrel log every reset as an error.
            _output.Reader.Complete(unexpectedError);
        }
    }

    private void FireConnectionClosed()
    {
        // Continuations registered on ConnectionClosed must not run on this thread's stack.
        ThreadPool.UnsafeQueueUserWorkItem(
            static state =>
            {
                state.CancelConnectionClosedToken();
                state._connectionClosedFired.TrySetResult();
            },
            this,
            preferLocal: false);
    }

    private void CancelConnectionClosedToken()
    {
        try
        {
            _connectionClosedTokenSource.Cancel();
        }
        catch (Exception ex)
        {
            IoUringTransportLog.ConnectionClosedCallbackFailed(_logger, ConnectionId, ex);
        }
    }

    /// <summary>Ends the connection: FIN after the output drained, or a reset for an abort. Any thread; first call wins.</summary>
    private void Shutdown(Exception? reason, bool abortive)
    {
        lock (_shutdownLock)
        {
            if (_shutdownStarted)
            {
                return;
            }

            _shutdownStarted = true;
            _abortive = abortive;
            _shutdownReason = reason ?? new ConnectionAbortedException("The io_uring transport's send loop completed gracefully.");
        }

        _ring.Post(this, OpShutdown);
    }

    private void ShutdownOnRing()
    {
        if (_closed)
        {
            return;
        }

        _shutdownRequested = true;
        if (_abortive)
        {
            IoUringTransportLog.ConnectionWriteRst(_logger, ConnectionId, _shutdownReason?.Message ?? "");
            ResetAndCancelInFlight();
        }
        else
        {
            IoUringTransportLog.ConnectionWriteFin(_logger, ConnectionId, _shutdownReason?.Message ?? "");
            // FIN after everything queued; also ends the pending receive with end of stream.
            _ = LinuxSocket.TryShutdown(_fd, SocketShutdown.Both);
            CancelReceive();
        }

        if (!_recvArmed)
        {
            EndReceive(_shutdownReason);
        }
    }

    /// <summary>
    /// SO_LINGER {on, 0}, so the close sends RST and drops unsent data (if the peer reset first
    /// there is nothing to reset), and a cancel of everything in flight on the fd (ring thread).
    /// </summary>
    private unsafe void ResetAndCancelInFlight()
    {
        _ = LinuxSocket.TrySetLingerZero(_fd);
        Sqe* sqe = _ring.GetSqe(OpKind.Cancel, _slot);
        sqe->PrepCancelFd(_fd, IoUringConstants.Cancel.All); // what is in flight ends with ECANCELED
    }

    private void TryFinishClose()
    {
        if (!_closeRequested || _closed || _recvArmed || _sendsInFlight > 0)
        {
            return;
        }

        // Nothing of ours is in flight: no completion can name this fd or slot any more.
        Debug.Assert(_inputDone, "the close is requested after the receive side ended");
        Debug.Assert(!_sendActive && !_zcInFlight, "the close is requested after the send loop ended");
        _closed = true;
        Libc.Close(_fd);
        _ring.FreeSlot(_slot);
        _ring.ActiveConnections--;
        _ringClosed.TrySetResult();
    }

}
