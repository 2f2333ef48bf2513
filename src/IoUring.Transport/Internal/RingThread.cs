using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Interop;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// One ring and the dedicated thread that alone submits to it. Other threads hand it work through
/// <see cref="Post"/>; the thread sleeps in io_uring_enter and is woken by an eventfd whose read is
/// kept pending in the ring, written only when the thread has announced that it sleeps.
/// </summary>
internal sealed unsafe class RingThread
{
    private const int CompletionBatch = 256;

    private readonly ConcurrentQueue<(IRingWork Work, int Operation)> _queue = new();
    private readonly IoUringTransportOptions _options;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<IRingCompletionHandler?> _slots = [];
    private readonly List<uint> _generations = [];
    private readonly Stack<int> _freeSlots = new();
    private readonly List<IoUringConnection> _waitingForBuffers = [];

    private Ring? _ring;
    private BufferRing? _buffers;
    private int _eventFd = -1;
    private ulong* _eventValue;        // the pending eventfd read writes here (native: the kernel writes it later).
    private int _needsWake;            // 1 while the ring thread is about to sleep or sleeping; set by it, cleared by either side.
    private volatile bool _stopping;   // set by Stop; the loop ends once no slot is in use.
    private int _liveSlots;            // ring thread only.
    private Exception? _startError;

    public RingThread(int index, IoUringTransportOptions options, ILogger logger)
    {
        Index = index;
        _options = options;
        _logger = logger;
        _thread = new Thread(Run)
        {
            IsBackground = true,
            Name = $"io_uring ring {index}",
        };
    }

    public int Index { get; }

    /// <summary>The ring (ring thread only).</summary>
    public Ring Ring => _ring!;

    /// <summary>The provided receive buffers (ring thread only).</summary>
    public BufferRing Buffers => _buffers!;

    public bool IsOnRingThread => Thread.CurrentThread == _thread;

    /// <summary>The threshold for zero-copy sends, or int.MaxValue when disabled or unsupported (set before the loop starts).</summary>
    public int ZeroCopySendThreshold { get; private set; } = int.MaxValue;

    /// <summary>Zero-copy sends issued so far (ring thread writes; read for tests and metrics).</summary>
    public long ZeroCopySends { get; set; }

    /// <summary>Starts the thread and waits until its ring is set up; a setup failure is rethrown here.</summary>
    public void Start()
    {
        _thread.Start();
        _started.Task.Wait();
        if (_startError is not null)
        {
            _thread.Join();
            throw _startError;
        }
    }

    /// <summary>Asks the loop to end once every slot is free, and waits for the thread.</summary>
    public bool Stop(TimeSpan timeout)
    {
        _stopping = true;
        Wake();
        return _thread.Join(timeout);
    }

    /// <summary>Queues work for the ring thread and wakes it if it sleeps. Any thread.</summary>
    public void Post(IRingWork work, int operation)
    {
        _queue.Enqueue((work, operation));
        Wake();
    }

    /// <summary>Assigns a slot to <paramref name="handler"/>; returns its index and current generation (ring thread).</summary>
    public (int Slot, uint Generation) AllocateSlot(IRingCompletionHandler handler)
    {
        int slot;
        if (_freeSlots.Count > 0)
        {
            slot = _freeSlots.Pop();
            _slots[slot] = handler;
        }
        else
        {
            slot = _slots.Count;
            _slots.Add(handler);
            _generations.Add(0);
        }

        _liveSlots++;
        return (slot, _generations[slot]);
    }

    /// <summary>Frees a slot; its generation moves on so late completions of the old owner are dropped (ring thread).</summary>
    public void FreeSlot(int slot)
    {
        _slots[slot] = null;
        _generations[slot] = (_generations[slot] + 1) & 0xFF_FFFF;
        _freeSlots.Push(slot);
        _liveSlots--;
    }

    /// <summary>A connection whose multishot receive ended with ENOBUFS; re-armed after this batch returned buffers.</summary>
    public void WaitForBuffers(IoUringConnection connection) => _waitingForBuffers.Add(connection);

    /// <summary>The next SQE, submitting first if the queue is full (ring thread).</summary>
    public Sqe* GetSqe() => _ring!.GetSqeSubmitIfFull();

    private void Wake()
    {
        // Pairs with the ring thread's store of 1 and re-check of the queue before it sleeps:
        // both sides use a full fence (Interlocked), so either the ring thread sees our item or we
        // see its flag (a Dekker handshake). Only one poster wins the exchange and writes.
        if (Volatile.Read(ref _needsWake) != 0 && Interlocked.Exchange(ref _needsWake, 0) != 0)
        {
            ulong one = 1;
            _ = Libc.Write(_eventFd, &one, sizeof(ulong));
        }
    }

    private void Run()
    {
        try
        {
            // SINGLE_ISSUER binds the ring to the creating thread, so it is created here.
            _ring = Ring.Create(new RingOptions
            {
                SqEntries = (uint)_options.SubmissionQueueSize,
                CqEntries = (uint)_options.SubmissionQueueSize * 8,
            });
            _ring.RegisterRingFd();
            if (_options.ZeroCopySendThreshold is int threshold && _ring.Probe().IsSupported(IoUringConstants.Op.SendMsgZc))
            {
                ZeroCopySendThreshold = threshold;
            }

            _buffers = BufferRing.Create(_ring, 0, _options.ReceiveBufferCount, _options.ReceiveBufferSize);
            // Blocking on purpose: io_uring honours O_NONBLOCK on reads and would complete the pending
            // read with -EAGAIN instead of parking it until a write.
            _eventFd = Libc.EventFd(0, Libc.EfdCloexec);
            if (_eventFd < 0)
            {
                throw new IoUringException("eventfd", Libc.LastErrno);
            }

            _eventValue = (ulong*)NativeMemory.Alloc(sizeof(ulong));
            ArmWakeRead();
        }
        catch (Exception ex)
        {
            _startError = ex;
            Cleanup();
            _started.TrySetResult();
            return;
        }

        _started.TrySetResult();
        try
        {
            Loop();
        }
        catch (Exception ex)
        {
            IoUringTransportLog.RingFailed(_logger, Index, ex);
            AbortAllAfterFailure(ex);
        }
        finally
        {
            Cleanup();
        }
    }

    private void Loop()
    {
        var batch = new Cqe[CompletionBatch];
        while (true)
        {
            bool didWork = DrainQueue();
            int count = _ring!.CopyCompletions(batch);
            for (int i = 0; i < count; i++)
            {
                Dispatch(in batch[i]);
            }

            if (_waitingForBuffers.Count > 0)
            {
                // Buffers handed back during this batch are in the ring again: re-arm now, so a dry
                // ring costs one failed receive per connection and never a loop without progress.
                foreach (IoUringConnection connection in _waitingForBuffers)
                {
                    connection.RearmReceiveAfterBufferShortage();
                }

                _waitingForBuffers.Clear();
            }

            if (_stopping && _liveSlots == 0)
            {
                return;
            }

            if (didWork || count > 0)
            {
                Submit(_ring.Submit());
                continue;
            }

            // Announce the sleep, then look once more: a Post that missed the flag is seen here.
            Interlocked.Exchange(ref _needsWake, 1);
            if (!_queue.IsEmpty || _stopping)
            {
                Interlocked.Exchange(ref _needsWake, 0);
                continue;
            }

            Submit(_ring.SubmitAndWait(1));
            Interlocked.Exchange(ref _needsWake, 0);
        }
    }

    private static void Submit(int result)
    {
        // EINTR: a signal (the runtime uses them to suspend threads) cut the wait short; EAGAIN and
        // EBUSY: the kernel is short of memory or holds overflowed CQEs; the next turn retries.
        if (result < 0 && result != -Errno.EINTR && result != -Errno.EAGAIN && result != -Errno.EBUSY && result != -Errno.ETIME)
        {
            Ring.ThrowOnError(result);
        }
    }

    private bool DrainQueue()
    {
        bool any = false;
        while (_queue.TryDequeue(out var item))
        {
            any = true;
            try
            {
                item.Work.Execute(this, item.Operation);
            }
            catch (Exception ex) when (item.Work is IoUringConnection connection)
            {
                FailConnection(connection, ex);
            }
        }

        return any;
    }

    private void Dispatch(in Cqe cqe)
    {
        OpKind kind = UserData.Kind(cqe.UserData);
        if (kind == OpKind.Wake)
        {
            ArmWakeRead();
            return;
        }

        int slot = UserData.Slot(cqe.UserData);
        if ((uint)slot >= (uint)_slots.Count || _generations[slot] != UserData.Generation(cqe.UserData))
        {
            return; // a completion for a slot's previous owner
        }

        IRingCompletionHandler? handler = _slots[slot];
        try
        {
            handler?.OnCompletion(this, kind, in cqe);
        }
        catch (Exception ex) when (handler is IoUringConnection connection)
        {
            FailConnection(connection, ex);
        }
    }

    /// <summary>
    /// A bug or an unexpected errno in one connection's handling must cost that connection only,
    /// not the ring and every connection on it: log it and reset the connection.
    /// </summary>
    private void FailConnection(IoUringConnection connection, Exception ex)
    {
        IoUringTransportLog.ConnectionError(_logger, connection.ConnectionId, ex);
        connection.Abort(new Microsoft.AspNetCore.Connections.ConnectionAbortedException("The io_uring transport failed handling this connection.", ex));
    }

    private void ArmWakeRead()
    {
        Sqe* sqe = GetSqe();
        sqe->PrepRead(_eventFd, _eventValue, sizeof(ulong), ulong.MaxValue);
        sqe->UserData = UserData.Encode(OpKind.Wake, 0, 0);
    }

    private void AbortAllAfterFailure(Exception ex)
    {
        foreach (IRingCompletionHandler? handler in _slots)
        {
            if (handler is IoUringConnection connection)
            {
                connection.FailFromRing(ex);
            }
            else if (handler is RingListener listener)
            {
                listener.FailFromRing(ex);
            }
        }
    }

    private void Cleanup()
    {
        _buffers?.Dispose();
        _ring?.Dispose();
        if (_eventFd >= 0)
        {
            Libc.Close(_eventFd);
        }

        if (_eventValue != null)
        {
            NativeMemory.Free(_eventValue);
        }
    }
}
