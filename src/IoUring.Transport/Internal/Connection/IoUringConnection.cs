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
    private readonly RingThread _ring;
    private readonly int _fd;
    private readonly RingSlot _slot;
    private readonly ILogger _logger;
    private const int MaxHeldRingBuffers = 16; // provided buffers one connection may hold before receives are copied

    private readonly ReceivePipeReader _reader; // ring thread appends, application reads
    private readonly long _maxReadBufferSize;   // 0: unlimited
    private readonly long _resumeThreshold;
    private readonly Pipe _output;  // application writes, send loop reads
    private readonly PipeWriter _outputWriter; // Transport.Output: the pipe's writer, or an OutputWriter over it where sends may be held
    private readonly CancellationTokenSource _connectionClosedTokenSource = new();
    private readonly TaskCompletionSource _receiveDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _ringClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _connectionClosedFired = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _shutdownLock = new();

    private IDictionary<object, object?>? _items;
    private string? _connectionId;
    private Socket? _socket;
    private Task _processing = Task.CompletedTask;


    private IoUringConnection(RingThread ring, int fd, AddressFamily family, EndPoint? localEndPoint, EndPoint? remoteEndPoint,
        PipeOptions outputOptions, IoUringTransportOptions options, ILogger logger, RingSlot? armed)
    {
        _ring = ring;
        _fd = fd;
        _logger = logger;
        _multishotReceive = family != AddressFamily.Unix; // see _multishotReceive
        _receivePollFirst = options.TestHooks?.ReceivePollFirst == true;
        MemoryPool = outputOptions.Pool;
        LocalEndPoint = localEndPoint;
        RemoteEndPoint = remoteEndPoint;
        if (armed is RingSlot taken)
        {
            // The kernel event loop armed the receive with this slot's user_data: take it over
            // (the caller marks the receive armed), generation and all.
            ring.ReplaceSlotHandler(taken, this);
            _slot = taken;
        }
        else
        {
            _slot = ring.AllocateSlot(this);
        }

        long maxRead = options.MaxReadBufferSize ?? 0;
        // Input: the ring thread appends the received buffers; the application's read continuations
        // run on the thread pool unless it opted into the ring thread.
        _maxReadBufferSize = maxRead;
        _resumeThreshold = maxRead > 0 ? maxRead / 2 : long.MaxValue;
        _reader = new ReceivePipeReader(this, _resumeThreshold, options.UnsafePreferInlineScheduling);
        _output = new Pipe(outputOptions);
        _outputWriter = ring.HoldsSendCompletions ? new OutputWriter(_output.Writer, this) : _output.Writer;
        // The connection is its own duplex pipe and feature collection (IoUringConnection.Features.cs):
        // per idle connection that is a DuplexPipe, a FeatureCollection and its dictionary fewer.
        Transport = this;
        ConnectionClosed = _connectionClosedTokenSource.Token;
        InitializeSend(outputOptions);
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
    /// The ring's enters between this connection's start and its first data (tests: 0 when both
    /// came back in one return); -1 before the first data.
    /// </summary>
    internal long EntersBeforeFirstData { get; private set; } = -1;

    /// <summary>The connection's processing: ends once it is closed and its descriptor is gone.</summary>
    internal Task Processing => _processing;

    /// <summary>
    /// Creates the connection on its ring thread, arms its receive and starts its processing.
    /// <paramref name="localEndPoint"/> is the listener's own end point when it is bound to one
    /// address, or null to read it from the socket. <paramref name="accepted"/> is false for a
    /// connection the ring connected (<see cref="IoUringConnectionFactory"/>). <paramref name="armed"/>
    /// is the slot whose multishot receive the kernel event loop armed on <paramref name="fd"/>
    /// already (<see cref="RingThread.TakeArmedReceive"/>), or none; if this throws, the caller
    /// closes the descriptor and abandons that receive.
    /// </summary>
    public static IoUringConnection Start(RingThread ring, int fd, EndPoint? localEndPoint, PipeOptions outputOptions, IoUringTransportOptions options, ILogger logger, bool accepted = true, RingSlot? armed = null)
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
        var connection = new IoUringConnection(ring, fd, family, local, remote, outputOptions, options, logger, armed);
        connection._startEnters = ring.Enters;
        if (armed is not null)
        {
            connection.Set(RingState.ReceiveArmed); // by the kernel, from the accept's completion
            if (!connection._multishotReceive)
            {
                // The kernel event loop arms a multishot receive, which on a Unix socket can miss
                // the end (IoUringConnection.Receive.cs): cancel it; its last CQE (ECANCELED, or
                // the end if that came first) has OnReceive arm a single one, which looks again.
                connection.CancelReceive();
            }
        }
        else
        {
            try
            {
                connection.ArmReceive();
            }
            catch
            {
                ring.FreeSlot(connection._slot); // the caller closes the fd; no SQE of ours names it
                throw;
            }
        }

        if (accepted)
        {
            ring.ConnectionsAccepted++;
        }
        else
        {
            ring.ConnectionsConnected++;
        }

        ring.ActiveConnections++;
        connection._processing = connection.RunAsync();
        return connection;
    }

    public override async ValueTask DisposeAsync()
    {
        _reader.Complete();
        _outputWriter.Complete(); // through the OutputWriter: a held send must learn of it
        await _processing.ConfigureAwait(false);
        _connectionClosedTokenSource.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }

    public void Execute(RingThread ring, int operation)
    {
        Debug.Assert(ring.IsOnRingThread && ring == _ring, "a connection's posted work runs on its own ring's thread");
        switch ((ConnectionWork)operation)
        {
            case ConnectionWork.Shutdown:
                ShutdownOnRing();
                break;
            case ConnectionWork.Close:
                Set(RingState.CloseRequested);
                TryFinishClose();
                break;
            case ConnectionWork.ResumeReceive:
                ResumeReceive();
                break;
            case ConnectionWork.Send:
                StartSend();
                break;
            case ConnectionWork.InputCompleted:
                StopReceiving();
                break;
            case ConnectionWork.OutputFlushed:
                ReleaseHeldSend();
                break;
        }
    }

    /// <summary>Posts <paramref name="work"/> to this connection's ring (any thread).</summary>
    private void Post(ConnectionWork work) => _ring.Post(this, (int)work);

    public void OnCompletion(RingThread ring, OpKind kind, in Cqe cqe)
    {
        Debug.Assert(ring.IsOnRingThread && ring == _ring, "a connection's completions arrive on its own ring's thread");
        switch (kind)
        {
            case OpKind.Recv:
                OnReceive(in cqe);
                break;
            case OpKind.Send:
            case OpKind.SendDeferrable:
                OnSend(in cqe);
                break;
        }

        TryFinishClose();
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
            Post(ConnectionWork.Close);
            await _ringClosed.Task.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            IoUringTransportLog.ConnectionError(_logger, ConnectionId, ex);
        }
    }

}
