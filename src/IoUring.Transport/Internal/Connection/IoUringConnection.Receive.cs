using System;
using System.Buffers;
using System.Collections.Generic;
using System.IO;
using System.Runtime.CompilerServices;
using System.Threading;
using IoUring.Interop;
using Microsoft.AspNetCore.Connections;

namespace IoUring.Transport.Internal;

internal sealed unsafe partial class IoUringConnection
{
    // Ring-thread state of the receive side.
    private int _receivePaused;         // 1 while MaxReadBufferSize is reached; set by the ring thread, read by the reader
    private int _resumePosted;          // 1 while a ResumeReceive is posted (any thread)
    private long _startEnters;          // the ring's enters when the connection started (ring thread; EntersBeforeFirstData)

    // Multishot on TCP; one receive at a time on AF_UNIX, where a multishot receive can miss the
    // peer's end (seen on Linux 6.18 and 7.2, not on 6.1 or 6.12): AF_UNIX reports how much is
    // left to read (SO_INQ, msg_inq), and once a receive took everything, io_uring's multishot
    // receive waits for the socket's next wake-up instead of trying again (io_recv_finish,
    // io_uring/net.c). A FIN that arrived with the data had its wake-up already, so its end of
    // stream waits for a wake-up that never comes, and the connection with it (TCP reports 1 left
    // at FIN, tcp_inq_hint, so it tries again and reads the end). A single receive armed anew
    // looks at the socket each time. MultishotTests shows both. A Unix connection whose multishot receive the kernel event loop
    // armed at accept cancels it at once and arms single ones from then on (Start).
    private readonly bool _multishotReceive;
    private readonly bool _receivePollFirst; // TransportTestHooks.ReceivePollFirst (set once)

    private bool CanReceive => !Is(RingState.InputDone) && Volatile.Read(ref _receivePaused) == 0 && !Is(RingState.ShutdownIssued);

    private void ArmReceive()
    {
        Sqe* sqe = _ring.GetSqe(OpKind.Recv, _slot);
        if (_multishotReceive)
        {
            sqe->PrepRecvMultishotSelect(_fd, _ring.Buffers.GroupId, bundle: false);
        }
        else
        {
            sqe->PrepRecvSelect(_fd, _ring.Buffers.GroupId); // its CQE has no F_MORE: OnReceive arms the next
        }

        if (_receivePollFirst)
        {
            sqe->SetPollFirst();
        }

        Set(RingState.ReceiveArmed);
    }

    private void CancelReceive()
    {
        if (Is(RingState.ReceiveArmed))
        {
            Sqe* sqe = _ring.GetSqe(OpKind.Cancel, _slot);
            sqe->PrepCancel64(_slot.Tag(OpKind.Recv));
        }
    }

    /// <summary>The ring has buffers again after this connection's receive ended with ENOBUFS; returns whether it re-armed.</summary>
    public bool RearmReceiveAfterBufferShortage()
    {
        if (!Is(RingState.ReceiveArmed) && CanReceive && !Is(RingState.Closed))
        {
            ArmReceive();
            return true;
        }

        return false; // closed, done, paused or shutting down meanwhile: nothing to wait for
    }

    private void OnReceive(in Cqe cqe)
    {
        if (!cqe.HasMore)
        {
            Clear(RingState.ReceiveArmed);
        }

        int result = cqe.Res;
        if (cqe.HasBuffer)
        {
            _ring.Buffers.Taken();
        }

        if (result > 0)
        {
            if (EntersBeforeFirstData < 0)
            {
                EntersBeforeFirstData = _ring.Enters - _startEnters;
            }

            _ring.BytesReceived += result;
            Deliver(cqe.BufferId, result);
            _ring.DataDelivered();
            if (!Is(RingState.InputDone) && _maxReadBufferSize > 0 && _reader.Length >= _maxReadBufferSize)
            {
                PauseReceive();
            }
        }
        else if (result == 0)
        {
            if (cqe.HasBuffer)
            {
                _ring.Buffers.ReturnOnRing(cqe.BufferId);
            }

            // End of stream: the peer sent FIN, or our own shutdown ended the receive.
            EndReceive(Is(RingState.ShutdownIssued) ? _shutdownReason : null);
            return;
        }
        else if (result == -Errno.ENOBUFS)
        {
            // The ring's buffers are all out; the kernel ended the multishot. The ring re-arms
            // this connection once it has buffers again.
            if (CanReceive)
            {
                _ring.Buffers.WaitFor(this);
                return;
            }
        }
        else if (result != -Errno.ECANCELED)
        {
            // As Kestrel's Sockets transport: once the connection is being shut down, its input
            // ends with the shutdown's reason (an abort stays an abort, even if the peer's reset came first).
            EndReceive(_shutdownReason ?? ToException(result));
            return;
        }

        // Data, an ENOBUFS we need not wait out, or ECANCELED (cancelled by us: to pause, to stop
        // after the application finished reading, or to shut down). Any of them may be the
        // multishot's last CQE (no F_MORE), also for reasons of the kernel's own, e.g. an ENOBUFS
        // already in the completion queue when our shutdown ran, so its cancel found nothing.
        if (!Is(RingState.ReceiveArmed))
        {
            if (Is(RingState.ShutdownIssued))
            {
                // Nothing more will come: the shutdown already decided how the input ends.
                EndReceive(_shutdownReason);
            }
            else if (CanReceive)
            {
                ArmReceive();
            }
        }
    }

    /// <summary>
    /// Hands received bytes to the input pipe: the provided buffer itself while this connection
    /// holds few of them and the ring has plenty; otherwise a copy in pool blocks, and the buffer
    /// goes straight back (DESIGN: one slow reader must not starve the ring).
    /// </summary>
    private void Deliver(ushort bufferId, int length)
    {
        if (Is(RingState.InputDone))
        {
            _ring.Buffers.ReturnOnRing(bufferId);
            return;
        }

        if (_reader.HeldRingBuffers < MaxHeldRingBuffers && !_ring.Buffers.Scarce)
        {
            if (!_reader.Append(_ring.Buffers.Memory(bufferId).Memory[..length], bufferId, owner: null))
            {
                _ring.Buffers.ReturnOnRing(bufferId);
            }

            return;
        }

        ReadOnlySpan<byte> data = _ring.Buffers.GetSpan(bufferId, length);
        while (!data.IsEmpty)
        {
            IMemoryOwner<byte> block = MemoryPool.Rent(Math.Min(data.Length, PinnedBlockMemoryPool.BlockSize));
            int n = Math.Min(block.Memory.Length, data.Length);
            data[..n].CopyTo(block.Memory.Span);
            if (!_reader.Append(block.Memory[..n], bufferId: -1, block))
            {
                block.Dispose();
                break;
            }

            data = data[n..];
        }

        _ring.Buffers.ReturnOnRing(bufferId);
    }

    /// <summary>The application is MaxReadBufferSize behind: stop taking data until it catches up.</summary>
    private void PauseReceive()
    {
        Interlocked.Exchange(ref _receivePaused, 1);
        // Pairs with the reader's AdvanceTo: it lowers the length under its lock, then looks at
        // _receivePaused. Both sides use full fences, so either it sees the pause (and posts a
        // resume) or we see its progress here.
        if (_reader.Length <= _resumeThreshold)
        {
            Interlocked.Exchange(ref _receivePaused, 0);
            return;
        }

        CancelReceive();
        IoUringTransportLog.ReceivePaused(_logger, ConnectionId);
    }

    /// <summary>The reader consumed down to the resume threshold (any thread).</summary>
    public void ResumeReceiveIfPaused()
    {
        if (Volatile.Read(ref _receivePaused) != 0 && Interlocked.Exchange(ref _resumePosted, 1) == 0)
        {
            Post(ConnectionWork.ResumeReceive);
        }
    }

    private void ResumeReceive()
    {
        Volatile.Write(ref _resumePosted, 0);
        if (Volatile.Read(ref _receivePaused) == 0 || _reader.Length > _resumeThreshold)
        {
            return;
        }

        Interlocked.Exchange(ref _receivePaused, 0);
        IoUringTransportLog.ReceiveResumed(_logger, ConnectionId);
        if (!Is(RingState.ReceiveArmed) && CanReceive && !Is(RingState.Closed))
        {
            ArmReceive();
        }
    }

    /// <summary>The application completed Transport.Input (any thread).</summary>
    public void InputCompletedByApplication() => Post(ConnectionWork.InputCompleted);

    /// <summary>Buffers the application advanced past (any thread).</summary>
    public void ReturnReceiveBuffers(List<int> bufferIds) => _ring.ReturnBuffers(bufferIds);

    /// <summary>The application completed Transport.Input: receive nothing more.</summary>
    private void StopReceiving()
    {
        if (Is(RingState.Closed))
        {
            return;
        }

        CancelReceive();
        EndReceive(null);
    }

    private void EndReceive(Exception? error)
    {
        if (Is(RingState.InputDone))
        {
            return;
        }

        Set(RingState.InputDone);
        if (error is ConnectionResetException)
        {
            IoUringTransportLog.ConnectionReset(_logger, ConnectionId);
        }
        else if (error is null && !Is(RingState.ShutdownIssued))
        {
            IoUringTransportLog.ConnectionReadFin(_logger, ConnectionId);
        }

        _reader.CompleteWriter(error);
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
