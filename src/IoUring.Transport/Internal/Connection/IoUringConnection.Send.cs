using System;
using System.Buffers;
using System.IO;
using System.IO.Pipelines;
using System.Threading;
using System.Threading.Tasks;
using System.Threading.Tasks.Sources;
using IoUring.Interop;
using IoUring.Sockets;
using Microsoft.AspNetCore.Connections;

namespace IoUring.Transport.Internal;

internal sealed partial class IoUringConnection : IValueTaskSource<int>
{
    // Send state: the send loop fills it, posts Send, and awaits _sendCore; the ring thread
    // owns it until it completes _sendCore. Never touched by both at once.
    private ManualResetValueTaskSourceCore<int> _sendCore;
    private SendState? _send;     // rented for one SendAsync of several segments, given back in GetResult
    private ReadOnlyMemory<byte> _sendSegment; // a send of one segment: no SendState, a plain send
    private MemoryHandle _sendHandle;          // its pin (free for pool blocks)
    private bool _sendRetired;    // the ring died with _sendSegment in a zero-copy send: never unpinned
    private int _iovCount;
    private int _iovIndex;        // first iovec not fully sent
    private int _sendTotal;
    private int _sendDone;
    private int _zcResult;        // result of a zero-copy send whose notification is still due

    // Held send completions (rings whose kernel event loop holds them, RingThread.HoldsSendCompletions).
    // The kernel may keep a send's completion in the CQ until something else needs the ring thread,
    // so the send loop, which awaits it before it reads the pipe again, could wait for ever for
    // bytes the application flushed meanwhile. A send may be held only if it took everything the
    // pipe held and the output is not complete, and the first flush (or completion) after that
    // releases it: it posts OutputFlushed, whose wake ends the kernel's sleep, and the ring thread
    // zeroes the send's entry in the program's table so a completion not posted yet is not held
    // either. Whether a flush came after the send loop's read is a Dekker handshake on two fields,
    // each written with a full fence before the other is read: the send loop sets _sendHold, then
    // reads _outputPublished; the writer publishes _outputPublished, then reads _sendHold. Either
    // the send loop sees the newer bytes (and does not hold) or the writer sees the hold (and
    // releases it).
    private int _sendHold;           // 1: the send in flight may be held. Set by the send loop before it posts the send; cleared by it when the send completes, or by the first flush after (which then posts OutputFlushed)
    private long _outputPublished;   // bytes the application has flushed (long.MaxValue once it completed the output); written by the OutputWriter, read by the send loop
    private long _sendConsumed;      // bytes of output the send loop has sent and advanced past (send loop only)
    private bool _sendDeferrable;    // the send in flight is submitted as OpKind.SendDeferrable (ring thread only)
    private long _holdableOutput;    // below this many unsent bytes the application's writer is not paused by the pipe (set once)

    private void InitializeSend(PipeOptions outputOptions)
    {
        _sendCore.RunContinuationsAsynchronously = true; // set per completion: see CompleteSend
        // The pipe pauses a flush once PauseWriterThreshold bytes are unsent and resumes it only
        // when an advance takes them below ResumeWriterThreshold, so with fewer than that unsent
        // the writer is not paused (System.IO.Pipelines, PipeOptions). No threshold: never paused.
        _holdableOutput = outputOptions.PauseWriterThreshold > 0 ? outputOptions.ResumeWriterThreshold : long.MaxValue;
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
                    // Held only while the application can write on: a writer the pipe paused (its
                    // flush waits for this send to be advanced past) would wait for a completion
                    // the kernel holds until something else completes.
                    bool mayWait = !result.IsCompleted && buffer.Length < _holdableOutput;
                    int sent = await SendAsync(buffer, mayWait).ConfigureAwait(false);
                    Volatile.Write(ref _sendHold, 0); // before the next read: a flush from here on is seen by it
                    _sendConsumed += sent;
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
            Volatile.Write(ref _sendHold, 0); // a failed send: later flushes have nothing to release
            Shutdown(shutdownReason, abortive: shutdownReason is not null);
            // As Kestrel's Sockets transport: only an unexpected error reaches the application's
            // writer. A reset or an abort is already reported through the input and the lifetime
            // feature, and passing it here would have Kestrel log every reset as an error.
            _output.Reader.Complete(unexpectedError);
        }
    }

    /// <summary>
    /// Hands one segment to the ring as a send, or up to <see cref="SendState.MaxIovecs"/> segments
    /// as one sendmsg; completes when all are sent. <paramref name="mayWait"/>: the output is not
    /// complete, so the completion may be held in the kernel if the send takes all of
    /// <paramref name="buffer"/>, everything the pipe held.
    /// </summary>
    private unsafe ValueTask<int> SendAsync(in ReadOnlySequence<byte> buffer, bool mayWait)
    {
        if (buffer.IsSingleSegment)
        {
            // Most responses are one block. A plain send needs no iovec or msghdr, so no SendState:
            // renting one per send held ~2.5 KB of arrays from here until the completion, and with
            // thousands of connections thousands of sends wait to be submitted at once, more than
            // the pool keeps; they were allocated anew and lived long enough to be promoted
            // (4096 connections: 1.6 KB allocated per request on top of Kestrel's ~0.9 KB).
            ReadOnlyMemory<byte> segment = buffer.First;
            _sendSegment = segment;
            _sendHandle = segment.Pin();
            _iovCount = 0;
            _sendTotal = segment.Length;
        }
        else
        {
            SendState send = _send = SendState.Rent(buffer.Length);
            _iovCount = SendGather.Fill(in buffer, send.Iovecs, send.Handles, send.Segments, out _sendTotal);
        }

        _iovIndex = 0;
        _sendDone = 0;
        _sendCore.Reset();
        if (mayWait && _sendTotal == buffer.Length && _ring.HoldsSendCompletions)
        {
            // The handshake (see _sendHold): set, full fence, then look at what was flushed. Bytes
            // flushed after the pipe was read, or the output completed since, and it is not held.
            Interlocked.Exchange(ref _sendHold, 1);
            if (Volatile.Read(ref _outputPublished) > _sendConsumed + _sendTotal)
            {
                Volatile.Write(ref _sendHold, 0);
            }
        }

        Post(ConnectionWork.Send);
        return new ValueTask<int>(this, _sendCore.Version);
    }

    /// <summary>
    /// The application flushed or completed its output (any thread): if the send in flight may be
    /// held in the kernel, release it (see <see cref="_sendHold"/>).
    /// </summary>
    internal void OutputPublished(long published)
    {
        // Full fence between the publication and the read of _sendHold: the handshake's other half.
        Interlocked.Exchange(ref _outputPublished, published);
        if (Volatile.Read(ref _sendHold) != 0 && Interlocked.Exchange(ref _sendHold, 0) != 0)
        {
            Post(ConnectionWork.OutputFlushed); // its wake ends the kernel's sleep; the ring thread then reaps the send
        }
    }

    /// <summary>The application wrote more while the send in flight may be held: it must not be held any more (ring thread).</summary>
    private void ReleaseHeldSend()
    {
        if (_sendDeferrable)
        {
            // The completion, if posted already, is in the CQ and this turn reaps it; if not, the
            // program no longer holds it when it comes.
            _sendDeferrable = false;
            _ring.ExpectSend(_slot, 0);
        }
    }

    private void StartSend()
    {
        Set(RingState.SendActive);
        // Read after the send was posted (a full fence): a flush that released it before is seen.
        _sendDeferrable = Volatile.Read(ref _sendHold) != 0;
        if (Is(RingState.Closed) || (Is(RingState.ShutdownIssued) && _abortive))
        {
            CompleteSend(-Errno.ECANCELED);
            return;
        }

        SubmitSendMsg();
    }

    private unsafe void SubmitSendMsg()
    {
        TransportTestHooks? hooks = _ring.Hooks;
        if (hooks?.FailSendSubmissions == true)
        {
            throw new IoUringException("Injected: getting an SQE for a send", Errno.EBUSY);
        }

        // Zero copy: two CQEs, the result (F_MORE), then the notification (F_NOTIF) once the kernel
        // no longer reads our memory (io_uring_prep_send_zc(3), io_uring_prep_sendmsg_zc(3)). The
        // send completes on the notification, so the send loop cannot recycle the blocks while the
        // NIC may read them. (The kernel loop may hold the result, never the notification.)
        bool zeroCopy = _sendTotal - _sendDone >= _ring.ZeroCopySendThreshold;
        // A send that may be held: the program holds its completion only if it reports all that
        // is left, so a partial send comes back at once and continues.
        OpKind kind = _sendDeferrable && !zeroCopy && _ring.ExpectSend(_slot, (uint)(_sendTotal - _sendDone)) ? OpKind.SendDeferrable : OpKind.Send;
        Sqe* sqe = _ring.GetSqe(kind, _slot);
        if (_send is null)
        {
            // One segment: what is left of it, straight from its pinned memory.
            byte* data = (byte*)_sendHandle.Pointer + _sendDone;
            int length = _sendTotal - _sendDone;
            if (hooks?.ShortSends == true)
            {
                length = Math.Min(length, TransportTestHooks.ShortSendBytes);
            }

            if (zeroCopy)
            {
                sqe->PrepSendZc(_fd, data, (uint)length, SocketInterop.MSG_NOSIGNAL);
            }
            else
            {
                sqe->PrepSend(_fd, data, (uint)length, SocketInterop.MSG_NOSIGNAL);
            }
        }
        else
        {
            MsgHdr* msg = _send.Msg;
            *msg = default;
            msg->Iov = _send.Iovecs + _iovIndex;
            msg->IovLen = hooks?.ShortSends == true ? 1 : (nuint)(_iovCount - _iovIndex);
            if (zeroCopy)
            {
                sqe->PrepSendMsgZc(_fd, msg, SocketInterop.MSG_NOSIGNAL);
            }
            else
            {
                sqe->PrepSendMsg(_fd, msg, SocketInterop.MSG_NOSIGNAL);
            }
        }

        if (zeroCopy)
        {
            Set(RingState.ZeroCopyInFlight);
            _ring.ZeroCopySends++;
        }
        _sendsInFlight++;
    }

    private unsafe void OnSend(in Cqe cqe)
    {
        int result = cqe.Res;
        if (cqe.IsNotification)
        {
            result = _zcResult; // the memory is free now; act on the result held back below
        }
        else if (cqe.HasMore)
        {
            _zcResult = result; // a zero-copy send: wait for its notification
            return;
        }

        _sendsInFlight--;
        Clear(RingState.ZeroCopyInFlight);
        if (result < 0)
        {
            CompleteSend(result);
            return;
        }

        _sendDone += result;
        _ring.BytesSent += result;
        if (_sendDone < _sendTotal && !Is(RingState.ShutdownIssued))
        {
            // A partial send (the socket buffer filled): skip what went out and continue (a send of
            // one segment starts again at _sendDone).
            _ring.PartialSends++;
            while (_send is not null && result > 0)
            {
                IoVec* iov = &_send!.Iovecs[_iovIndex];
                if ((nuint)result >= iov->Length)
                {
                    result -= (int)iov->Length;
                    _iovIndex++;
                }
                else
                {
                    iov->Base = (byte*)iov->Base + result;
                    iov->Length -= (nuint)result;
                    result = 0;
                }
            }

            SubmitSendMsg();
            return;
        }

        CompleteSend(_sendDone);
    }

    private void CompleteSend(int result)
    {
        Clear(RingState.SendActive);
        _sendDeferrable = false;
        if (result >= 0)
        {
            // A successful send continues the send loop right here on the ring thread: it advances
            // the output pipe and, when the application has written more, gathers it and posts the
            // next send; otherwise it parks on the pipe, whose reader scheduler is the thread pool.
            // That code never blocks, and it saves a thread-pool hop per response (measured: 2.35
            // work items and 2.8 context switches per request at 16 connections before, against
            // 1.06 and 1.0 for Sockets; perf/README.md). Kestrel's Sockets transport, likewise,
            // continues its send loop where the send completed on Linux (an inline awaiter scheduler).
            // Failures still go through the thread pool: they run shutdown and logging code.
            _sendCore.RunContinuationsAsynchronously = false;
            _sendCore.SetResult(result);
            return;
        }

        _sendCore.RunContinuationsAsynchronously = true;

        int errno = -result;
        string call = _send is null ? "send" : "sendmsg";
        Exception error = errno switch
        {
            Errno.ECANCELED => _shutdownReason ?? new ConnectionAbortedException("The send was cancelled."),
            Errno.EPIPE or Errno.ECONNRESET or Errno.ENOTCONN or Errno.ESHUTDOWN or Errno.ETIMEDOUT
                => new ConnectionResetException($"The connection was reset (errno {errno}).", new IoUringException(call, errno)),
            _ => new IOException($"Send failed (errno {errno}).", new IoUringException(call, errno)),
        };
        _sendCore.SetException(error);
    }

    /// <summary>The ring died: complete the send it had, if any (ring thread, in its last moments).</summary>
    private void FailPendingSend(Exception error)
    {
        if (!Is(RingState.SendActive))
        {
            return;
        }

        if (Is(RingState.ZeroCopyInFlight))
        {
            // The kernel may read these blocks until the ring's teardown drops the socket's queued
            // data; reused for another connection's output, they would carry its bytes here.
            if (_send is null)
            {
                _sendRetired = true;
                PinnedBlockMemoryPool.Retire(_sendSegment);
            }
            else
            {
                _send.Retired = true;
                for (int i = 0; i < _iovCount; i++)
                {
                    PinnedBlockMemoryPool.Retire(_send.Segments[i]);
                }
            }
        }

        Clear(RingState.SendActive);
        _sendsInFlight = 0;
        _sendCore.RunContinuationsAsynchronously = true; // the failure path runs shutdown and logging code
        _sendCore.SetException(error);
    }

    int IValueTaskSource<int>.GetResult(short token)
    {
        try
        {
            return _sendCore.GetResult(token);
        }
        finally
        {
            // The send is over (completed, failed, or never issued): the kernel is done with the
            // iovecs and, a zero-copy send having completed on its notification, with the data.
            SendState? send = _send;
            _send = null;
            if (send is null)
            {
                if (!_sendRetired)
                {
                    _sendHandle.Dispose();
                }

                _sendHandle = default;
                _sendSegment = default;
            }
            else if (!send.Retired)
            {
                for (int i = 0; i < _iovCount; i++)
                {
                    send.Handles[i].Dispose();
                    send.Segments[i] = default;
                }

                SendState.Return(send);
            }
        }
    }

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _sendCore.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _sendCore.OnCompleted(continuation, state, token, flags);
}
