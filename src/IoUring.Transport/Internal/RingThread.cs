using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Interop;
using Microsoft.Win32.SafeHandles;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// One ring and the dedicated thread that alone submits to it. Other threads hand it work through
/// <see cref="Post"/>; the thread sleeps in io_uring_enter and is woken by an eventfd whose read is
/// kept pending in the ring, written only when the thread has announced that it sleeps.
/// </summary>
[SuppressMessage("Design", "CA1001", Justification = "The ring thread disposes what it owns when its loop ends (Cleanup); nothing else may.")]
internal sealed unsafe class RingThread
{
    private const int CompletionBatch = 256;

    // How long the ring waits on the CPU for the responses to data it just delivered before it
    // sleeps in io_uring_enter (see AwaitWorkBriefly).
    private static readonly long s_awaitWorkTicks = Stopwatch.Frequency / 50_000; // 20 µs

    private readonly ConcurrentQueue<(IRingWork Work, int Operation)> _queue = new();
    private readonly IoUringTransportOptions _options;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<IRingCompletionHandler?> _slots = [];
    private readonly List<uint> _generations = [];
    private readonly Stack<int> _freeSlots = new();
    private readonly Queue<IoUringConnection> _waitingForBuffers = new(); // in the order their receives ran dry
    private readonly ConcurrentQueue<int> _returnedBuffers = new(); // provided buffers the application is done with

    private Ring? _ring;
    private BufferRing? _buffers;
    private int _eventFd = -1;
    private SafeFileHandle? _eventFdHandle; // owns _eventFd; Wake takes a reference, so the number is never written after close
    private ulong* _eventValue;        // the pending eventfd read writes here (native: the kernel writes it later).
    private int _needsWake;            // 1 while the ring thread is about to sleep or sleeping; set by it, cleared by either side.
    private volatile bool _stopping;   // set by Stop; the loop ends once no slot is in use.
    private int _liveSlots;            // ring thread only.
    private long _activeConnections;   // ring thread writes; see ActiveConnections.
    private int _buffersOut;           // provided buffers the kernel filled and we have not given back (ring thread only).
    private bool _dataDelivered;       // data went to an application since the ring last slept (ring thread only).
    private ReceiveBufferMemory[] _bufferMemory = [];
    private Exception? _startError;
    private Exception? _endReason;     // set once by the ring thread when its loop ended (failed or stopped); Posts are rejected from then on

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

    // Metrics: written by the ring thread only, read by TransportMetrics when a listener collects
    // (64-bit reads and writes are atomic; a value one increment stale is fine).
    public long ActiveConnections
    {
        get => _activeConnections;
        set
        {
            _activeConnections = value;
            Load?.PublishActive(value); // LeastConnections dispatch reads it in the kernel
        }
    }

    /// <summary>This ring's entry in the LeastConnections load map; null in other modes (set before any listener starts).</summary>
    public RingLoadSlot? Load { get; set; }

    public long ConnectionsAccepted { get; set; }

    public long BytesReceived { get; set; }

    public long BytesSent { get; set; }

    public long Enters => _ring?.EnterCalls ?? 0;

    public long Submissions => _ring?.Submitted ?? 0;

    public long Completions { get; private set; }

    public long BuffersInUse => Volatile.Read(ref _buffersOut);

    public long BufferShortages { get; private set; }

    /// <summary>Whether the ring's thread is still running.</summary>
    public bool IsRunning => _thread.IsAlive;

    /// <summary>The threshold for zero-copy sends, or int.MaxValue when disabled or unsupported (set before the loop starts).</summary>
    public int ZeroCopySendThreshold { get; private set; } = int.MaxValue;

    /// <summary>Zero-copy sends issued so far (ring thread writes; read for tests and metrics).</summary>
    public long ZeroCopySends { get; set; }

    /// <summary>Sends the kernel took only part of (the socket buffer filled), continued from where they stopped (ring thread writes; read for tests).</summary>
    public long PartialSends { get; set; }

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
        RequestStop();
        return WaitForExit(timeout);
    }

    /// <summary>Asks the loop to end once every slot is free; connections still open keep being served until then.</summary>
    public void RequestStop()
    {
        _stopping = true;
        // Store, then load _needsWake in Wake: without a full fence between them the store could
        // still sit in this core's store buffer while the ring thread announces its sleep and reads
        // _stopping as false, and we read _needsWake as 0 — both would miss the other.
        Interlocked.MemoryBarrier();
        Wake();
    }

    /// <summary>
    /// Fault injection for tests: the next send submissions on this ring fail as if the ring could
    /// not take an SQE (the kernel cannot be made to refuse one on demand). Always false in use.
    /// </summary>
    public bool FailSendSubmissions { get; set; }

    /// <summary>
    /// Fault injection for tests: every send on this ring hands the kernel only part of what it
    /// has, at most <see cref="ShortSendBytes"/> of one segment or the first iovec of a sendmsg, so
    /// the partial sends a full socket causes now and then happen on every send. Always false in use.
    /// </summary>
    public bool ShortSends { get; set; }

    /// <summary>What a send of one segment hands the kernel at most under <see cref="ShortSends"/>.</summary>
    public const int ShortSendBytes = 1000;

    /// <summary>Whether the ring's loop has ended (stopped or failed): work posted to it is rejected.</summary>
    public bool HasEnded => Volatile.Read(ref _endReason) is not null;

    /// <summary>Waits for the ring's thread to end.</summary>
    public bool WaitForExit(TimeSpan timeout) => _thread.Join(timeout);

    /// <summary>Queues work for the ring thread and wakes it if it sleeps. Any thread.</summary>
    public void Post(IRingWork work, int operation)
    {
        _queue.Enqueue((work, operation));
        // Enqueue is a full fence (an interlocked compare-exchange on the queue's tail), and so is the
        // ring thread's Interlocked.Exchange of _endReason before its last drain: a Dekker
        // handshake, so either that drain sees our item or we see the end and reject it here.
        if (Volatile.Read(ref _endReason) is Exception ended)
        {
            RejectQueued(ended);
            return;
        }

        Wake();
    }

    /// <summary>The ring's loop has ended; whatever is still queued will never run.</summary>
    private void RejectQueued(Exception failure)
    {
        while (_queue.TryDequeue(out var item))
        {
            item.Work.Reject(item.Operation, failure);
        }
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

    /// <summary>Memory over provided buffer <paramref name="bufferId"/>, for pipe segments.</summary>
    public ReceiveBufferMemory BufferMemory(ushort bufferId) => _bufferMemory[bufferId];

    /// <summary>
    /// Whether receives should be copied out and their buffers returned at once: when a quarter or
    /// less of the ring's buffers is left, holding more would let slow readers starve every other
    /// connection of the ring (ring thread).
    /// </summary>
    public bool BuffersScarce => _buffersOut > _buffers!.Count * 3 / 4;

    /// <summary>Counts a buffer the kernel just filled (ring thread).</summary>
    public void BufferTaken() => _buffersOut++;

    /// <summary>Gives a buffer straight back from the ring thread.</summary>
    public void ReturnBufferOnRing(ushort bufferId)
    {
        _buffers!.Return(bufferId);
        _buffersOut--;
    }

    /// <summary>The application advanced past these buffers; any thread. They go back on the next loop turn.</summary>
    public void ReturnBuffers(List<int> bufferIds)
    {
        foreach (int id in bufferIds)
        {
            _returnedBuffers.Enqueue(id);
        }

        // A sleeping ring is woken for returns only when it may need them: more than half of its
        // buffers are out (connections may be parked on ENOBUFS, or about to copy), or it is
        // stopping and waits for every buffer. Otherwise they ride along with the next wake-up,
        // which under load is the response's send a moment later: measured 0.77 eventfd writes
        // and 2.8 context switches per request at 16 connections before (perf/README.md).
        // Dekker pairing: the enqueue above is a full fence (ConcurrentQueue uses Interlocked), and
        // the ring thread stores _buffersOut, then fences (the exchange of _needsWake), then looks
        // at this queue before sleeping; so either it sees these ids, or we see its _buffersOut.
        if (_stopping || Volatile.Read(ref _buffersOut) > _buffers!.Count / 2)
        {
            Wake();
        }
    }

    /// <summary>A connection whose multishot receive ended with ENOBUFS; re-armed once the ring has buffers again.</summary>
    public void WaitForBuffers(IoUringConnection connection)
    {
        BufferShortages++;
        _waitingForBuffers.Enqueue(connection);
    }

    /// <summary>The next SQE, submitting first if the queue is full (ring thread).</summary>
    public Sqe* GetSqe() => _ring!.GetSqeSubmitIfFull();

    private void Wake()
    {
        // Pairs with the ring thread's store of 1 and re-check of the queue before it sleeps:
        // both sides use a full fence (Interlocked), so either the ring thread sees our item or we
        // see its flag (a Dekker handshake). Only one poster wins the exchange and writes.
        if (Volatile.Read(ref _needsWake) != 0 && Interlocked.Exchange(ref _needsWake, 0) != 0)
        {
            // The reference keeps the descriptor open while we write: a ring that just ended has
            // closed its eventfd, and the same number may already name another file.
            bool added = false;
            try
            {
                _eventFdHandle!.DangerousAddRef(ref added);
                ulong one = 1;
                _ = Libc.Write(_eventFd, &one, sizeof(ulong));
            }
            catch (ObjectDisposedException)
            {
                // The ring is gone; nobody is left to wake.
            }
            finally
            {
                if (added)
                {
                    _eventFdHandle!.DangerousRelease();
                }
            }
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
            _bufferMemory = new ReceiveBufferMemory[_buffers.Count];
            for (int i = 0; i < _bufferMemory.Length; i++)
            {
                _bufferMemory[i] = new ReceiveBufferMemory(_buffers.GetBuffer((ushort)i), _buffers.BufferSize);
            }

            // Blocking on purpose: io_uring honours O_NONBLOCK on reads and would complete the pending
            // read with -EAGAIN instead of parking it until a write.
            _eventFd = Libc.EventFd(0, Libc.EfdCloexec);
            if (_eventFd < 0)
            {
                throw new IoUringException("eventfd", Libc.LastErrno);
            }

            _eventFdHandle = new SafeFileHandle(_eventFd, ownsHandle: true);

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
        Exception endReason = new ObjectDisposedException($"io_uring ring {Index}", "The ring has stopped.");
        try
        {
            Loop();
        }
        catch (Exception ex)
        {
            // A bug of ours or an error the ring cannot go on after. Everything on this ring ends
            // now, with the error, instead of waiting for a loop that will never turn again.
            endReason = ex;
            try
            {
                IoUringTransportLog.RingFailed(_logger, Index, ex);
            }
            catch (Exception)
            {
                // a logger that throws must not stop the clean-up below
            }

            Load?.MarkDead(); // before the listeners close: LeastConnections stops choosing this ring
            AbortAllAfterFailure(ex);
        }
        finally
        {
            // Full fence: pairs with Post's enqueue-then-read (see there). Work queued from now on
            // is rejected by its poster; what is queued already, by this drain.
            Interlocked.Exchange(ref _endReason, endReason);
            RejectQueued(endReason);
            Cleanup();
        }
    }

    private void Loop()
    {
        var batch = new Cqe[CompletionBatch];
        while (true)
        {
            bool didWork = DrainQueue() | DrainReturnedBuffers();
            int count = _ring!.CopyCompletions(batch);
            Completions += count;
            for (int i = 0; i < count; i++)
            {
                Dispatch(in batch[i]);
            }

            if (_waitingForBuffers.Count > 0 && _buffersOut < _buffers!.Count)
            {
                // The ring has buffers again: re-arm, first come first served, as many connections
                // as there are free buffers (each will take at least one; more would only end in
                // ENOBUFS again). While it has none, waiting connections stay parked until a
                // return, so a dry ring never turns into a loop without progress.
                int free = _buffers.Count - _buffersOut;
                while (free > 0 && _waitingForBuffers.TryDequeue(out IoUringConnection? connection))
                {
                    if (connection.RearmReceiveAfterBufferShortage())
                    {
                        free--;
                    }
                }
            }

            if (_stopping && _liveSlots == 0 && _buffersOut == 0)
            {
                return;
            }

            if (didWork || count > 0)
            {
                Submit(_ring.Submit());
                continue;
            }

            if (_dataDelivered)
            {
                _dataDelivered = false;
                if (AwaitWorkBriefly())
                {
                    continue;
                }
            }

            // Announce the sleep, then look once more: a Post that missed the flag is seen here.
            Interlocked.Exchange(ref _needsWake, 1);
            if (!_queue.IsEmpty || !_returnedBuffers.IsEmpty || (_stopping && _liveSlots == 0 && _buffersOut == 0))
            {
                Interlocked.Exchange(ref _needsWake, 0);
                continue;
            }

            Submit(_ring.SubmitAndWait(1));
            Interlocked.Exchange(ref _needsWake, 0);
        }
    }

    /// <summary>Notes that received data went to an application: its response is likely to follow shortly (ring thread).</summary>
    public void DataDelivered() => _dataDelivered = true;

    /// <summary>
    /// Applications usually answer data within microseconds. Waiting that long for their work on
    /// the CPU is cheaper than sleeping in io_uring_enter and being woken through the eventfd (a
    /// write by the poster, a wake-up and a context switch here). The ring yields while it waits
    /// rather than spinning: the thread-pool threads that produce the work need a CPU, and with a
    /// ring per CPU (the default) spinning rings can hold every CPU. Measured unpinned on two CPUs
    /// (perf/README.md, Unpinned): spinning there cost twice the CPU per request of yielding
    /// (47 against 23 µs at 16 connections). Returns whether work came.
    /// </summary>
    private bool AwaitWorkBriefly()
    {
        long deadline = Stopwatch.GetTimestamp() + s_awaitWorkTicks;
        do
        {
            if (!_queue.IsEmpty)
            {
                return true; // returned buffers alone do not end the wait: they come before the response
            }

            Thread.Yield();
        }
        while (Stopwatch.GetTimestamp() < deadline);
        return false;
    }

    private bool DrainReturnedBuffers()
    {
        int count = 0;
        while (_returnedBuffers.TryDequeue(out int id))
        {
            _buffers!.Add((ushort)id, count++);
        }

        if (count == 0)
        {
            return false;
        }

        _buffers!.Advance(count); // one tail store publishes the whole batch
        _buffersOut -= count;
        return true;
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
        catch (Exception ex) when (handler is RingListener listener)
        {
            IoUringTransportLog.ListenerError(_logger, Index, ex);
            listener.RecoverAfterError();
        }
    }

    /// <summary>
    /// A bug or an unexpected errno in one connection's handling must cost that connection only,
    /// not the ring and every connection on it: log it and reset the connection.
    /// </summary>
    private void FailConnection(IoUringConnection connection, Exception ex)
    {
        IoUringTransportLog.ConnectionError(_logger, connection.ConnectionId, ex);
        connection.FailOnRing(ex);
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
            try
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
            catch (Exception)
            {
                // One handler failing again (a throwing logger, say) must not leave the others hanging.
            }
        }
    }

    private void Cleanup()
    {
        // Buffers still referenced by an application's unread input would dangle if freed: a ring
        // that ends that way (it failed, or its stop timed out) leaks them instead.
        if (_buffersOut == 0)
        {
            _buffers?.Dispose();
        }

        _ring?.Dispose();
        // A poster that won the wake exchange holds a reference; the close waits for it.
        Volatile.Write(ref _needsWake, 0);
        if (_eventFdHandle is not null)
        {
            _eventFdHandle.Dispose();
        }
        else if (_eventFd >= 0)
        {
            Libc.Close(_eventFd);
        }

        if (_eventValue != null)
        {
            NativeMemory.Free(_eventValue);
        }
    }
}
