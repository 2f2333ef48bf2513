using System;
using System.Buffers;
using System.Collections.Generic;
using System.IO.Pipelines;
using System.Threading;
using System.Threading.Tasks;
using System.Threading.Tasks.Sources;

namespace IoUring.Transport.Internal;

/// <summary>
/// <c>Transport.Input</c>: a <see cref="PipeReader"/> over the received bytes where the kernel put
/// them. Segments point into the ring's provided buffers (no copy), or, once a connection holds
/// its share of the ring's buffers, into pool blocks the bytes were copied to (so one slow reader
/// cannot starve the other connections of the ring). A provided buffer goes back to the ring when
/// the application advances past it.
/// </summary>
/// <remarks>
/// The ring thread appends and completes; the application reads and advances. Every field below
/// is guarded by <see cref="_sync"/>; buffer returns and resume requests are handed to the ring
/// thread after the lock is released.
/// </remarks>
internal sealed class ReceivePipeReader : PipeReader, IValueTaskSource<ReadResult>
{
    private readonly object _sync = new();
    private readonly IReceiveBufferOwner _connection;
    private readonly Stack<Segment> _spareSegments = new();
    private readonly long _resumeThreshold;

    private Segment? _head;              // oldest unconsumed segment
    private int _headStart;              // bytes of _head already consumed
    private Segment? _tail;              // newest segment
    private long _length;                // unconsumed bytes
    private bool _examinedEverything;    // the reader saw all there is: the next read waits for more
    private bool _writerCompleted;
    private Exception? _writerError;
    private bool _readerCompleted;
    private bool _cancelNextRead;
    private bool _readPending;           // a ReadAsync waits on _readCore
    private ManualResetValueTaskSourceCore<ReadResult> _readCore;
    private CancellationTokenRegistration _readCancellation;
    private int _heldRingBuffers;        // provided buffers referenced by segments
    private long _appended;              // bytes ever appended: segments' running indexes only grow
    private List<int>? _spareReturnList; // reused for the ids handed back per advance; null while one is in use

    public ReceivePipeReader(IReceiveBufferOwner connection, long resumeThreshold, bool inlineContinuations)
    {
        _connection = connection;
        _resumeThreshold = resumeThreshold;
        _readCore.RunContinuationsAsynchronously = !inlineContinuations;
    }

    /// <summary>Unconsumed bytes (for the ring thread's pause decision).</summary>
    public long Length
    {
        get
        {
            lock (_sync)
            {
                return _length;
            }
        }
    }

    /// <summary>Provided buffers this connection holds.</summary>
    public int HeldRingBuffers => Volatile.Read(ref _heldRingBuffers);

    // ---- Ring thread side ----

    /// <summary>Appends received bytes. <paramref name="bufferId"/> is the provided buffer they live in, or -1 for a pool block owned by <paramref name="owner"/>.</summary>
    /// <returns>False when the reader has completed: the caller keeps ownership of the memory.</returns>
    public bool Append(ReadOnlyMemory<byte> memory, int bufferId, IMemoryOwner<byte>? owner)
    {
        bool wake;
        ReadResult result = default;
        lock (_sync)
        {
            if (_readerCompleted || _writerCompleted)
            {
                return false;
            }

            Segment segment = _spareSegments.Count > 0 ? _spareSegments.Pop() : new Segment();
            segment.Set(memory, bufferId, owner, _appended);
            _appended += memory.Length;
            if (_tail is null)
            {
                _head = segment;
                _headStart = 0;
            }
            else
            {
                _tail.SetNext(segment);
            }

            _tail = segment;
            _length += memory.Length;
            _examinedEverything = false;
            if (bufferId >= 0)
            {
                _heldRingBuffers++;
            }

            wake = TakePendingRead(ref result);
        }

        if (wake)
        {
            _readCore.SetResult(result);
        }

        return true;
    }

    /// <summary>No more data: end of stream, or the error that ended the receive.</summary>
    public void CompleteWriter(Exception? error)
    {
        bool wake;
        ReadResult result = default;
        lock (_sync)
        {
            if (_writerCompleted)
            {
                return;
            }

            _writerCompleted = true;
            _writerError = error;
            wake = TakePendingRead(ref result);
        }

        if (wake)
        {
            if (error is not null)
            {
                _readCore.SetException(error);
            }
            else
            {
                _readCore.SetResult(result);
            }
        }
    }

    // ---- Application side ----

    public override bool TryRead(out ReadResult result)
    {
        lock (_sync)
        {
            ThrowIfReaderCompleted();
            if (_readPending)
            {
                throw new InvalidOperationException("A read is already pending.");
            }

            result = default;
            return TryReadUnsynchronized(ref result);
        }
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<ReadResult>(cancellationToken);
        }

        lock (_sync)
        {
            ThrowIfReaderCompleted();
            if (_readPending)
            {
                throw new InvalidOperationException("A read is already pending.");
            }

            ReadResult result = default;
            if (TryReadUnsynchronized(ref result))
            {
                return new ValueTask<ReadResult>(result);
            }

            _readCore.Reset();
            _readPending = true;
        }

        if (cancellationToken.CanBeCanceled)
        {
            _readCancellation = cancellationToken.UnsafeRegister(
                static (state, token) => ((ReceivePipeReader)state!).CancelRead(token),
                this);
        }

        return new ValueTask<ReadResult>(this, _readCore.Version);
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        List<int>? returned = null;
        bool resume;
        lock (_sync)
        {
            ThrowIfReaderCompleted();
            if (_head is null)
            {
                return;
            }

            var consumedSegment = (Segment?)consumed.GetObject();
            int consumedIndex = consumed.GetInteger();
            if (consumedSegment is null)
            {
                consumedSegment = _head;
                consumedIndex = _headStart;
            }

            long consumedBytes = consumedSegment.RunningIndex + consumedIndex - (_head.RunningIndex + _headStart);
            if (consumedBytes < 0 || consumedBytes > _length)
            {
                throw new InvalidOperationException("The consumed position is outside the data the reader was given.");
            }

            _length -= consumedBytes;
            // Release every segment before the consumed one, and the consumed one too when it
            // was read to its end; the writer cannot append meanwhile (it takes the same lock).
            while (_head != consumedSegment)
            {
                Segment done = _head!;
                _head = done.NextSegment;
                Release(done, ref returned);
            }

            if (consumedIndex == _head.Memory.Length)
            {
                Segment done = _head;
                _head = done.NextSegment;
                Release(done, ref returned);
                _headStart = 0;
            }
            else
            {
                _headStart = consumedIndex;
            }

            if (_head is null)
            {
                _tail = null;
            }

            // Examined up to the end: the next read waits for new bytes (or the end of the stream).
            var examinedSegment = (Segment?)examined.GetObject();
            _examinedEverything = _tail is null ||
                (examinedSegment == _tail && examined.GetInteger() >= _tail.Memory.Length);
            resume = _length <= _resumeThreshold;
        }

        if (returned is not null)
        {
            ReturnBuffers(returned);
        }

        if (resume)
        {
            _connection.ResumeReceiveIfPaused();
        }
    }

    public override void CancelPendingRead()
    {
        bool wake;
        ReadResult result = default;
        lock (_sync)
        {
            _cancelNextRead = true;
            wake = TakePendingRead(ref result);
        }

        if (wake)
        {
            _readCore.SetResult(result);
        }
    }

    public override void Complete(Exception? exception = null)
    {
        List<int>? returned = null;
        lock (_sync)
        {
            if (_readerCompleted)
            {
                return;
            }

            _readerCompleted = true;
            while (_head is not null)
            {
                Segment done = _head;
                _head = done.NextSegment;
                Release(done, ref returned);
            }

            _tail = null;
            _length = 0;
        }

        if (returned is not null)
        {
            ReturnBuffers(returned);
        }

        _connection.InputCompletedByApplication();
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token)
    {
        _readCancellation.Dispose();
        return _readCore.GetResult(token);
    }

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token) => _readCore.GetStatus(token);

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _readCore.OnCompleted(continuation, state, token, flags);

    private void CancelRead(CancellationToken token)
    {
        bool wake;
        lock (_sync)
        {
            wake = _readPending;
            _readPending = false;
        }

        if (wake)
        {
            _readCore.SetException(new OperationCanceledException(token));
        }
    }

    /// <summary>If a read waits and can be satisfied now, claims it and builds its result (lock held).</summary>
    private bool TakePendingRead(ref ReadResult result)
    {
        if (!_readPending)
        {
            return false;
        }

        if (_writerCompleted && _writerError is not null && !_cancelNextRead)
        {
            _readPending = false;
            return true; // the caller completes it with the error
        }

        if (!TryReadUnsynchronized(ref result))
        {
            return false;
        }

        _readPending = false;
        return true;
    }

    private bool TryReadUnsynchronized(ref ReadResult result)
    {
        if (_cancelNextRead)
        {
            _cancelNextRead = false;
            result = new ReadResult(GetBuffer(), isCanceled: true, isCompleted: _writerCompleted);
            return true;
        }

        if (_writerCompleted)
        {
            if (_writerError is not null)
            {
                throw _writerError;
            }

            result = new ReadResult(GetBuffer(), isCanceled: false, isCompleted: true);
            return true;
        }

        if (_length > 0 && !_examinedEverything)
        {
            result = new ReadResult(GetBuffer(), isCanceled: false, isCompleted: false);
            return true;
        }

        return false;
    }

    private ReadOnlySequence<byte> GetBuffer()
        => _head is null
            ? ReadOnlySequence<byte>.Empty
            : new ReadOnlySequence<byte>(_head, _headStart, _tail!, _tail!.Memory.Length);

    private void Release(Segment segment, ref List<int>? returned)
    {
        if (segment.BufferId >= 0)
        {
            if (returned is null)
            {
                // One list per reader, not one per advance (measured: 72 B per request otherwise;
                // perf/Microbenchmarks ReceivePipeReaderBenchmarks).
                returned = _spareReturnList ?? [];
                _spareReturnList = null;
            }

            returned.Add(segment.BufferId);
            _heldRingBuffers--;
        }
        else
        {
            segment.Owner?.Dispose();
        }

        segment.Reset();
        _spareSegments.Push(segment);
    }

    /// <summary>Hands the ids to the connection (which copies them out) and keeps the list for the next advance; lock not held.</summary>
    private void ReturnBuffers(List<int> returned)
    {
        _connection.ReturnReceiveBuffers(returned);
        returned.Clear();
        Volatile.Write(ref _spareReturnList, returned);
    }

    private void ThrowIfReaderCompleted()
    {
        if (_readerCompleted)
        {
            throw new InvalidOperationException("Reading is not allowed after the reader was completed.");
        }
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public int BufferId { get; private set; } = -1;

        public IMemoryOwner<byte>? Owner { get; private set; }

        public Segment? NextSegment => (Segment?)Next;

        public void Set(ReadOnlyMemory<byte> memory, int bufferId, IMemoryOwner<byte>? owner, long runningIndex)
        {
            Memory = memory;
            BufferId = bufferId;
            Owner = owner;
            RunningIndex = runningIndex;
            Next = null;
        }

        public void SetNext(Segment next) => Next = next;

        public void Reset()
        {
            Memory = default;
            BufferId = -1;
            Owner = null;
            Next = null;
        }
    }
}
