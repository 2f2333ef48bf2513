using System;
using System.IO;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Threading.Tasks;
using IoUring.Interop;
using Microsoft.AspNetCore.Connections;

namespace IoUring.Transport.Internal;

internal sealed unsafe partial class IoUringConnection
{
    // Ring-thread state of the receive side.
    private bool _recvArmed;            // a multishot receive is in the kernel (until a CQE without F_MORE)
    private bool _receivePaused;        // MaxReadBufferSize reached: waiting for the application to read
    private bool _inputDone;            // Transport.Input's writer is completed; nothing more is received
    private bool _unflushed;            // bytes written to the input pipe since the last flush
    private ValueTask<FlushResult> _pendingFlush; // the flush that paused reception
    private Action? _onFlushCompleted;

    private bool CanReceive => !_inputDone && !_receivePaused && !_shutdownRequested;

    private void ArmReceive()
    {
        Sqe* sqe = _ring.GetSqe();
        sqe->PrepRecvMultishotSelect(_fd, _ring.Buffers.GroupId, bundle: false);
        sqe->UserData = UserData.Encode(OpKind.Recv, _slot, _generation);
        _recvArmed = true;
    }

    private void CancelReceive()
    {
        if (_recvArmed)
        {
            Sqe* sqe = _ring.GetSqe();
            sqe->PrepCancel64(UserData.Encode(OpKind.Recv, _slot, _generation));
            sqe->UserData = UserData.Encode(OpKind.Cancel, _slot, _generation);
        }
    }

    /// <summary>Called after a batch in which this connection's receive ended with ENOBUFS.</summary>
    public void RearmReceiveAfterBufferShortage()
    {
        if (!_recvArmed && CanReceive && !_closed)
        {
            ArmReceive();
        }
    }

    private void OnReceive(in Cqe cqe)
    {
        if (!cqe.HasMore)
        {
            _recvArmed = false;
        }

        int result = cqe.Res;
        if (result > 0)
        {
            ushort bufferId = cqe.BufferId;
            if (!_inputDone)
            {
                CopyToInput(_ring.Buffers.GetSpan(bufferId, result));
            }

            // Copied: the buffer goes straight back, so a slow reader never holds ring buffers.
            _ring.Buffers.Return(bufferId);
            if (!_inputDone && !_receivePaused)
            {
                FlushInput();
            }
        }
        else if (result == 0)
        {
            // End of stream: the peer sent FIN, or our own shutdown ended the receive.
            EndReceive(_shutdownRequested ? _shutdownReason : null);
            return;
        }
        else if (result == -Errno.ENOBUFS)
        {
            // The ring's buffers are all out; the kernel ended the multishot. Re-arm after the
            // current batch has returned buffers (RingThread calls RearmReceiveAfterBufferShortage).
            if (CanReceive)
            {
                _ring.WaitForBuffers(this);
            }

            return;
        }
        else if (result == -Errno.ECANCELED)
        {
            // Cancelled by us: to pause, to stop after the application finished reading, or on abort.
            if (_shutdownRequested)
            {
                EndReceive(_shutdownReason);
            }
        }
        else
        {
            EndReceive(ToException(result));
            return;
        }

        if (!_recvArmed && CanReceive)
        {
            ArmReceive();
        }
    }

    private void CopyToInput(ReadOnlySpan<byte> data)
    {
        PipeWriter writer = _input.Writer;
        while (!data.IsEmpty)
        {
            Span<byte> destination = writer.GetSpan(1);
            int n = Math.Min(destination.Length, data.Length);
            data[..n].CopyTo(destination);
            writer.Advance(n);
            data = data[n..];
        }

        _unflushed = true;
    }

    // The flush's ValueTask is kept when it does not complete at once and consumed exactly once,
    // from its own completion callback (ResumeReceive): what CA2012 guards against cannot happen.
#pragma warning disable CA2012
    private void FlushInput()
    {
        _unflushed = false;
        ValueTask<FlushResult> flush = _input.Writer.FlushAsync();
        if (flush.IsCompletedSuccessfully)
        {
            FlushResult result = flush.Result;
            if (result.IsCompleted)
            {
                StopReceiving();
            }

            return;
        }

        // The reader is MaxReadBufferSize behind: stop taking buffers from the ring until it catches up.
        _receivePaused = true;
        _pendingFlush = flush;
        CancelReceive();
        IoUringTransportLog.ReceivePaused(_logger, ConnectionId);
        _onFlushCompleted ??= () => _ring.Post(this, OpResumeReceive);
        flush.GetAwaiter().UnsafeOnCompleted(_onFlushCompleted);
    }
#pragma warning restore CA2012

    private void ResumeReceive()
    {
        if (!_receivePaused)
        {
            return;
        }

        _receivePaused = false;
        ValueTask<FlushResult> flush = _pendingFlush;
        _pendingFlush = default;
        FlushResult result;
        try
        {
            // Completed: this runs from the flush's own completion callback.
#pragma warning disable CA2012
            result = flush.GetAwaiter().GetResult();
#pragma warning restore CA2012
        }
        catch (Exception ex)
        {
            EndReceive(ex);
            return;
        }

        IoUringTransportLog.ReceiveResumed(_logger, ConnectionId);
        if (result.IsCompleted)
        {
            StopReceiving();
            return;
        }

        if (_unflushed)
        {
            // Data that arrived while the cancel was in flight.
            FlushInput();
        }

        if (!_recvArmed && CanReceive && !_closed)
        {
            ArmReceive();
        }
    }

    /// <summary>The application completed Transport.Input: receive nothing more.</summary>
    private void StopReceiving()
    {
        CancelReceive();
        EndReceive(null);
    }

    private void EndReceive(Exception? error)
    {
        if (_inputDone)
        {
            return;
        }

        _inputDone = true;
        if (error is ConnectionResetException)
        {
            IoUringTransportLog.ConnectionReset(_logger, ConnectionId);
        }
        else if (error is null && !_shutdownRequested)
        {
            IoUringTransportLog.ConnectionReadFin(_logger, ConnectionId);
        }

        _input.Writer.Complete(error);
        _receiveDone.TrySetResult();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Exception ToException(int negativeErrno)
    {
        int errno = -negativeErrno;
        return errno is Errno.ECONNRESET or Errno.EPIPE or Errno.ECONNABORTED or Errno.ETIMEDOUT
            ? new ConnectionResetException($"The connection was reset by the peer (errno {errno}).", new IoUringException("recv", errno))
            : new IOException($"Receive failed (errno {errno}).", new IoUringException("recv", errno));
    }
}
