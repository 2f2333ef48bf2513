using System;
using System.Diagnostics;
using System.Net.Sockets;
using System.Threading;
using IoUring.Interop;
using IoUring.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace IoUring.Transport.Internal;

/// <summary>
/// How a connection ends: a graceful shutdown (FIN after the output, or Kestrel's Abort(null)), an
/// abort (RST), a failure of its own handling or of its ring, and the close once nothing of it is
/// in flight (docs/design.md, "Shutdown and close").
/// </summary>
/// <remarks>
/// <para>
/// What the ring thread knows of the connection is one field, <see cref="_state"/>, read and
/// written on the ring thread only (<see cref="Set"/> and <see cref="Clear"/> assert it); in a
/// debugger or an assertion's message it prints as the list of its bits. The decision to shut
/// down is the one part any thread may make, under <c>_shutdownLock</c>.
/// </para>
/// <list type="table">
/// <listheader><term>state</term><description>set when, cleared when</description></listheader>
/// <item><term><see cref="RingState.ReceiveArmed"/></term><description>a multishot receive is in the kernel: set by <c>ArmReceive</c>; cleared by its last CQE (no <c>IORING_CQE_F_MORE</c>) or the ring's failure. Not set while parked for buffers or paused by <c>MaxReadBufferSize</c>.</description></item>
/// <item><term>shutdown decided</term><description><c>_shutdownStarted</c> with <c>_abortive</c> and <c>_shutdownReason</c>, by whichever thread ends it first (<see cref="Shutdown"/>); the ring is told with <see cref="ConnectionWork.Shutdown"/>. Never undone.</description></item>
/// <item><term><see cref="RingState.ShutdownIssued"/></term><description>the ring acted on it: FIN (<c>shutdown(SHUT_RDWR)</c>, receive cancelled) or RST (linger 0, everything on the descriptor cancelled); also a fault. No receive is armed again.</description></item>
/// <item><term><see cref="RingState.InputDone"/></term><description><c>Transport.Input</c> completed (FIN, reset, shutdown, or the application completed it); <c>ConnectionClosed</c> fires. Never undone.</description></item>
/// <item><term><see cref="RingState.SendActive"/></term><description>a posted <see cref="ConnectionWork.Send"/> ran and its send has not completed to the send loop.</description></item>
/// <item><term><see cref="RingState.ZeroCopyInFlight"/></term><description>a zero-copy send's data may still be read by the kernel: set at its issue, cleared by its notification CQE.</description></item>
/// <item><term><see cref="RingState.CloseRequested"/></term><description>input done and the send loop ended (<see cref="ConnectionWork.Close"/>). It may arrive before the ring ran the shutdown another thread decided; that shutdown then finds the connection closed.</description></item>
/// <item><term><see cref="RingState.Closed"/></term><description>terminal: close requested with no receive armed and no send in flight (<c>_sendsInFlight</c> 0, zero-copy notifications in): the descriptor is closed and the slot freed (<see cref="TryFinishClose"/>); or the ring failed (<see cref="OnRingFailed"/>).</description></item>
/// </list>
/// A failure (<see cref="OnFault"/>, <see cref="OnRingFailed"/>) decides an abortive shutdown and
/// ends what it can without the ring's help.
/// </remarks>
internal sealed partial class IoUringConnection
{
    /// <summary>The ring thread's record of the connection (the table above).</summary>
    [Flags]
    private enum RingState : byte
    {
        None = 0,
        ReceiveArmed = 1 << 0,
        ShutdownIssued = 1 << 1,
        InputDone = 1 << 2,
        SendActive = 1 << 3,
        ZeroCopyInFlight = 1 << 4,
        CloseRequested = 1 << 5,
        Closed = 1 << 6,
    }

    // Shutdown state: written under _shutdownLock by whichever thread ends the connection first.
    private bool _shutdownStarted;
    private bool _abortive;                 // reset (RST) rather than FIN
    private volatile Exception? _shutdownReason;

    // Ring-thread state.
    private RingState _state;
    private int _sendsInFlight;             // send SQEs whose CQE (and ZC notification) has not arrived

    private bool Is(RingState state) => (_state & state) != 0;

    private void Set(RingState state)
    {
        Debug.Assert(_ring.IsOnRingThread, "a connection's ring state changes on its ring's thread");
        _state |= state;
    }

    private void Clear(RingState state)
    {
        Debug.Assert(_ring.IsOnRingThread, "a connection's ring state changes on its ring's thread");
        _state &= ~state;
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

    void IConnectionLifetimeFeature.Abort() => Abort(new ConnectionAbortedException("The connection was aborted by the application via IConnectionLifetimeFeature.Abort()."));

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

        Clear(RingState.ReceiveArmed);
        EndReceive(_shutdownReason);
        // The ring's teardown ends what is in flight on its own time: a zero-copy send's data may
        // still be read after this, so its blocks are retired rather than given back to the pool.
        FailPendingSend(_shutdownReason);
        _output.Reader.CancelPendingRead(); // the send loop must not wait for output nobody will send
        if (!Is(RingState.Closed))
        {
            Set(RingState.Closed);
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

        if (Is(RingState.Closed))
        {
            return;
        }

        Set(RingState.ShutdownIssued);
        try
        {
            ResetAndCancelInFlight();
        }
        catch (Exception)
        {
            // The ring cannot take the cancel either: what is in flight ends when the peer or the kernel ends it.
        }

        EndReceive(_shutdownReason); // later receive completions find the input done and give their buffers back
        if (Is(RingState.SendActive) && _sendsInFlight == 0)
        {
            CompleteSend(-Errno.ECANCELED); // the send never reached the kernel
        }

        _output.Reader.CancelPendingRead();
    }

    public void Reject(int operation, Exception error)
    {
        switch ((ConnectionWork)operation)
        {
            case ConnectionWork.Send:
                // Queued but never issued: the send loop waits for it.
                CompleteSend(-Errno.ECANCELED);
                break;
            case ConnectionWork.Close:
                _ringClosed.TrySetResult(); // OnRingFailed closed the descriptor
                break;
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

        Post(ConnectionWork.Shutdown);
    }

    private void ShutdownOnRing()
    {
        if (Is(RingState.Closed))
        {
            return;
        }

        Set(RingState.ShutdownIssued);
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

        if (!Is(RingState.ReceiveArmed))
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
        if (!Is(RingState.CloseRequested) || Is(RingState.Closed) || Is(RingState.ReceiveArmed) || _sendsInFlight > 0)
        {
            return;
        }

        // Nothing of ours is in flight: no completion can name this fd or slot any more.
        Debug.Assert(Is(RingState.InputDone), $"the close is requested after the receive side ended ({_state})");
        Debug.Assert(!Is(RingState.SendActive | RingState.ZeroCopyInFlight), $"the close is requested after the send loop ended ({_state})");
        Set(RingState.Closed);
        Libc.Close(_fd);
        _ring.FreeSlot(_slot);
        _ring.ActiveConnections--;
        _ringClosed.TrySetResult();
    }
}
