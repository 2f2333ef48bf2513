using System;
using System.Diagnostics;
using System.IO;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Interop;
using IoUring.Sockets;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// One outgoing connect on one ring (<see cref="IoUringConnectionFactory"/>): an
/// <c>IORING_OP_CONNECT</c> for a socket created here, cancelled by its caller's token with an
/// <c>IORING_OP_ASYNC_CANCEL</c>. On success the ring thread starts an <see cref="IoUringConnection"/>
/// on the descriptor, with the same receive and send paths as an accepted one; on failure the
/// descriptor is closed and the errno becomes the <see cref="SocketException"/> Socket.ConnectAsync
/// would throw for it.
/// </summary>
internal sealed class RingConnect : IRingCompletionHandler, IRingWork
{
    private readonly RingThread _ring;
    private readonly int _fd;
    private readonly EndPoint _endPoint;
    private readonly PipeOptions _outputOptions;
    private readonly IoUringTransportOptions _options;
    private readonly ILogger _logger;
    private readonly TaskCompletionSource<IoUringConnection> _result = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // The sockaddr, in native memory so it cannot move: the kernel copies it when it prepares the
    // request at submission (io_connect_prep, io_uring/net.c); it is freed once the connect's CQE is in,
    // which is later than needed and needs no reasoning about when the submission happened.
    private unsafe byte* _sockaddr;
    private readonly int _sockaddrLength;

    // Ring-thread state.
    private RingSlot _slot = RingSlot.None;
    private bool _connectInFlight;  // the connect SQE is queued or in the kernel
    private bool _cancelInFlight;   // a cancel of it is
    private bool _cancelled;        // the caller's token asked for the cancel
    private bool _fdOwned = true;   // the descriptor is ours to close (until a connection took it)

    private unsafe RingConnect(RingThread ring, int fd, EndPoint endPoint, PipeOptions outputOptions, IoUringTransportOptions options, ILogger logger)
    {
        _ring = ring;
        _fd = fd;
        _endPoint = endPoint;
        _outputOptions = outputOptions;
        _options = options;
        _logger = logger;
        _sockaddr = (byte*)NativeMemory.Alloc((nuint)SocketAddressMarshal.MaxLength);
        try
        {
            _sockaddrLength = SocketAddressMarshal.Write(endPoint, new Span<byte>(_sockaddr, SocketAddressMarshal.MaxLength));
        }
        catch
        {
            FreeSockaddr(); // an address with no sockaddr form: the caller closes the socket
            throw;
        }
    }

    private enum ConnectWork
    {
        Start = 1, // take a slot, submit the connect
        Cancel,    // the caller's token fired: cancel the connect if it is still in the kernel
    }

    /// <summary>
    /// Connects a new stream socket to <paramref name="endPoint"/> (an <see cref="IPEndPoint"/> or a
    /// <see cref="UnixDomainSocketEndPoint"/>) on <paramref name="ring"/>. Any thread.
    /// </summary>
    public static async Task<IoUringConnection> ConnectAsync(
        RingThread ring, EndPoint endPoint, PipeOptions outputOptions, IoUringTransportOptions options, ILogger logger, CancellationToken cancellationToken)
    {
        AddressFamily family = endPoint is UnixDomainSocketEndPoint ? AddressFamily.Unix : endPoint.AddressFamily;
        int fd = LinuxSocket.Create(family, nonBlocking: false);
        RingConnect connect;
        try
        {
            connect = new RingConnect(ring, fd, endPoint, outputOptions, options, logger);
        }
        catch
        {
            Libc.Close(fd);
            throw;
        }

        ring.Post(connect, (int)ConnectWork.Start);
        // Registered after the post: a token that fires now queues the cancel behind the start.
        using CancellationTokenRegistration registration = cancellationToken.UnsafeRegister(
            static state => ((RingConnect)state!).RequestCancel(), connect);
        try
        {
            return await connect._result.Task.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException($"The connect to {endPoint} was cancelled.", null, cancellationToken);
        }
    }

    private void RequestCancel() => _ring.Post(this, (int)ConnectWork.Cancel);

    public unsafe void Execute(RingThread ring, int operation)
    {
        Debug.Assert(ring.IsOnRingThread && ring == _ring, "a connect's posted work runs on its own ring's thread");
        switch ((ConnectWork)operation)
        {
            case ConnectWork.Start:
                if (!_ring.ConnectAllowed)
                {
                    // The rings started before any connection factory existed, so their opcode
                    // allowlist (RestrictRingOperations) left connect out; the kernel would refuse it.
                    Fail(new InvalidOperationException(
                        "The io_uring rings were started before the IoUringConnectionFactory was created, and their opcode allowlist (IoUringTransportOptions.RestrictRingOperations) does not include connect. Register the factory with AddIoUringConnectionFactory, or create it before the server starts."));
                    return;
                }

                _slot = _ring.AllocateSlot(this);
                Sqe* sqe = _ring.GetSqe(OpKind.Connect, _slot);
                sqe->PrepConnect(_fd, _sockaddr, (uint)_sockaddrLength);
                _connectInFlight = true;
                break;
            case ConnectWork.Cancel:
                _cancelled = true;
                if (_connectInFlight && !_cancelInFlight)
                {
                    Sqe* cancel = _ring.GetSqe(OpKind.Cancel, _slot);
                    cancel->PrepCancel64(_slot.Tag(OpKind.Connect)); // the connect then completes with -ECANCELED
                    _cancelInFlight = true;
                }

                break;
        }
    }

    public void OnCompletion(RingThread ring, OpKind kind, in Cqe cqe)
    {
        Debug.Assert(ring.IsOnRingThread && ring == _ring, "a connect's completions arrive on its own ring's thread");
        if (kind == OpKind.Cancel)
        {
            _cancelInFlight = false; // 0, or -ENOENT/-EALREADY when the connect completed first: its own CQE says how it ended
        }
        else if (kind == OpKind.Connect)
        {
            _connectInFlight = false;
            FreeSockaddr();
            if (_result.Task.IsCompleted)
            {
                // A fault answered the caller and closed the descriptor while the connect was in
                // the kernel (which holds its own reference to the socket): nothing is left to do.
            }
            else if (cqe.Res == 0)
            {
                Connected();
            }
            else if (cqe.Res == -Errno.ECANCELED && _cancelled)
            {
                Fail(new OperationCanceledException());
            }
            else
            {
                Fail(SocketErrors.CreateException(-cqe.Res, "connect", _endPoint));
            }
        }

        TryFreeSlot();
    }

    private void Connected()
    {
        IoUringConnection connection;
        try
        {
            connection = IoUringConnection.Start(_ring, _fd, null, _outputOptions, _options, _logger, accepted: false);
        }
        catch (Exception ex)
        {
            Fail(ex);
            return;
        }

        _fdOwned = false; // the connection closes it
        if (!_result.TrySetResult(connection))
        {
            // Cannot happen: a connect is answered once, on this thread. Do not leak it if it did.
            connection.Abort(new Microsoft.AspNetCore.Connections.ConnectionAbortedException("The connect was already answered."));
        }
    }

    /// <summary>Answers the caller with <paramref name="error"/> and closes the descriptor (ring thread, or the poster once the ring ended).</summary>
    private void Fail(Exception error)
    {
        if (_fdOwned)
        {
            _fdOwned = false;
            Libc.Close(_fd);
        }

        _result.TrySetException(error);
    }

    private void TryFreeSlot()
    {
        if (_slot.IsAssigned && !_connectInFlight && !_cancelInFlight)
        {
            _ring.FreeSlot(_slot);
            _slot = RingSlot.None;
        }
    }

    private unsafe void FreeSockaddr()
    {
        NativeMemory.Free(_sockaddr);
        _sockaddr = null;
    }

    public void OnFault(Exception error)
    {
        // Our own handling threw (a full SQ that could not be submitted, say). What is still in the
        // kernel keeps its slot and memory until its CQE; the caller learns now.
        if (!_connectInFlight)
        {
            FreeSockaddr();
            TryFreeSlot();
        }

        Fail(error);
    }

    public void OnRingFailed(Exception error)
    {
        // The ring is gone with everything in it: nothing will complete or read the address again.
        FreeSockaddr();
        Fail(new IOException($"The io_uring ring {_ring.Index} failed while connecting to {_endPoint}.", error));
    }

    public void Reject(int operation, Exception error)
    {
        if ((ConnectWork)operation == ConnectWork.Start)
        {
            FreeSockaddr(); // never submitted
            Fail(error);
        }
    }
}
