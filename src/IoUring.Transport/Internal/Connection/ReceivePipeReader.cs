using System;
using System.Buffers;
using System.Collections.Generic;
using System.Diagnostics;
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
/// <para>
/// What a caller sees is what <see cref="Pipe"/>'s reader shows (Kestrel's Sockets transport hands
/// Kestrel one, so Kestrel relies on nothing else): the same buffers, the same cancellation and
/// completion, and the same <see cref="InvalidOperationException"/> for a read while the last one
/// was not advanced, an advance with no read, or examined before consumed.
/// An empty buffer is <c>default</c>, as Pipe's, so its positions carry no segment and mean
/// "nothing consumed, nothing examined" whatever was appended meanwhile. Two differences, both in
/// misuse: an advance with no read throws before it changes anything (Pipe applies it, then
/// throws), and a position this reader never handed out throws <see cref="InvalidOperationException"/>
/// (Pipe fails its cast). <c>ReceivePipeReaderConformanceTests</c> drives both readers alike.
/// </para>
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
    private ReadState _readState;        // between a read and its AdvanceTo, as Pipe tracks it
    private long _lastExamined;          // running index of the last examined position (TryRead: bytes past it are new)
    private bool _readPending;           // a ReadAsync waits on _readCore
    private ManualResetValueTaskSourceCore<ReadResult> _readCore;
    private CancellationToken _readToken; // the waiting read's token
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
        Debug.Assert(!memory.IsEmpty, "an empty segment would share its running index with the next one");
        bool wake;
        ReadResult result = default;
        Exception? readError = null;
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

            wake = TakePendingRead(ref result, out readError);
        }

        if (wake)
        {
            CompletePendingRead(result, readError);
        }

        return true;
    }

    /// <summary>No more data: end of stream, or the error that ended the receive.</summary>
    public void CompleteWriter(Exception? error)
    {
        bool wake;
        ReadResult result = default;
        Exception? readError;
        lock (_sync)
        {
            if (_writerCompleted)
            {
                return;
            }

            _writerCompleted = true;
            _writerError = error;
            wake = TakePendingRead(ref result, out readError);
        }

        if (wake)
        {
            CompletePendingRead(result, readError);
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

            // As Pipe's TryRead: bytes past the last examined position count as new, even when an
            // advance examined less than an earlier one (ReadAsync waits then; TryRead does not).
            result = default;
            if (IsReadReady || _appended > _lastExamined)
            {
                ThrowIfFailed(TakeReadResult(ref result, canceledBy: default));
                return true;
            }

            // Nothing to read: as Pipe, a tentative read, which an AdvanceTo may complete or not.
            if (_readState == ReadState.Active)
            {
                ThrowAlreadyReading();
            }

            _readState = ReadState.Tentative;
            return false;
        }
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        lock (_sync)
        {
            ThrowIfReaderCompleted();
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<ReadResult>(cancellationToken);
        }

        lock (_sync)
        {
            if (_readPending)
            {
                throw new InvalidOperationException("A read is already pending.");
            }

            ReadResult result = default;
            if (IsReadReady)
            {
                ThrowIfFailed(TakeReadResult(ref result, canceledBy: default));
                return new ValueTask<ReadResult>(result);
            }

            _readCore.Reset();
            _readPending = true;
            if (cancellationToken.CanBeCanceled)
            {
                // Registered under the lock, so a token cancelled meanwhile runs CancelRead here
                // (the lock is reentrant) and the wait completes before anyone can observe it.
                _readToken = cancellationToken;
                _readCancellation = cancellationToken.UnsafeRegister(
                    static (state, token) => ((ReceivePipeReader)state!).CancelRead(token),
                    this);
            }

            return new ValueTask<ReadResult>(this, _readCore.Version);
        }
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        List<int>? returned = null;
        bool resume;
        lock (_sync)
        {
            ThrowIfReaderCompleted();
            if (_readState == ReadState.None)
            {
                throw new InvalidOperationException("No reading operation to complete.");
            }

            // A position without a segment comes from an empty buffer (default, as Pipe's): nothing
            // consumed, nothing examined, even if bytes were appended since.
            Segment? consumedSegment = SegmentOf(consumed);
            Segment? examinedSegment = SegmentOf(examined);
            long consumedIndex = consumedSegment is null ? -1 : consumedSegment.RunningIndex + consumed.GetInteger();
            long examinedIndex = examinedSegment is null ? -1 : examinedSegment.RunningIndex + examined.GetInteger();
            if (consumedSegment is not null && examinedSegment is not null && examinedIndex < consumedIndex)
            {
                throw new InvalidOperationException("The examined position cannot be less than the consumed position.");
            }

            // A stale position (a buffer advanced past before) may name a segment already given back
            // and reused: it must be one of the segments held now, inside the unconsumed bytes, or
            // releasing up to it would run past the tail (segments' running indexes only grow).
            long start = _head is null ? _appended : _head.RunningIndex + _headStart;
            if (consumedSegment is not null &&
                (_head is null ||
                 (consumedSegment != _head && consumedSegment.RunningIndex <= _head.RunningIndex) ||
                 (uint)consumed.GetInteger() > (uint)consumedSegment.Memory.Length ||
                 consumedIndex < start || consumedIndex > start + _length))
            {
                throw new InvalidOperationException("The consumed position is outside the data the reader was given.");
            }

            // Decided before anything is released, against the data as it is now: examined up to the
            // end means the next read waits for new bytes (or the end of the stream). Examining less
            // changes nothing, as in Pipe: only an append makes the data new again.
            if (examinedSegment == _tail && (examinedSegment is null || examined.GetInteger() == examinedSegment.Memory.Length))
            {
                _examinedEverything = true;
            }

            if (examinedSegment is not null)
            {
                _lastExamined = examinedIndex;
            }
            if (consumedSegment is not null)
            {
                _length -= consumedIndex - start;
                // Release every segment before the consumed one, and the consumed one too when it
                // was read to its end; the writer cannot append meanwhile (it takes the same lock).
                while (_head != consumedSegment)
                {
                    Segment done = _head!;
                    _head = done.NextSegment;
                    Release(done, ref returned);
                }

                int indexInSegment = consumed.GetInteger();
                if (indexInSegment == consumedSegment.Memory.Length)
                {
                    _head = consumedSegment.NextSegment;
                    Release(consumedSegment, ref returned);
                    _headStart = 0;
                }
                else
                {
                    _headStart = indexInSegment;
                }

                if (_head is null)
                {
                    _tail = null;
                }
            }

            _readState = ReadState.None;
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
        Exception? readError;
        lock (_sync)
        {
            _cancelNextRead = true;
            wake = TakePendingRead(ref result, out readError);
        }

        if (wake)
        {
            CompletePendingRead(result, readError);
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
            _readState = ReadState.None;
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
        _readCancellation = default;
        return _readCore.GetResult(token);
    }

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token) => _readCore.GetStatus(token);

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _readCore.OnCompleted(continuation, state, token, flags);

    private void CancelRead(CancellationToken token)
    {
        ReadResult result = default;
        Exception? readError;
        lock (_sync)
        {
            // A registration of an earlier read may fire late: only the waiting read's token counts.
            if (!_readPending || !_readToken.Equals(token))
            {
                return;
            }

            _readPending = false;
            readError = TakeReadResult(ref result, canceledBy: token);
        }

        CompletePendingRead(result, readError);
    }

    /// <summary>Pipe's reader awaitable is complete: there is something to report (lock held).</summary>
    private bool IsReadReady => _cancelNextRead || _writerCompleted || (_length > 0 && !_examinedEverything);

    /// <summary>If a read waits and can be satisfied now, claims it and builds its outcome (lock held).</summary>
    private bool TakePendingRead(ref ReadResult result, out Exception? error)
    {
        error = null;
        if (!_readPending || !IsReadReady)
        {
            return false;
        }

        _readPending = false;
        error = TakeReadResult(ref result, canceledBy: default);
        return true;
    }

    /// <summary>
    /// The outcome of a read that is ready, in Pipe's order (its GetReadResult): the writer's error
    /// first, then the cancellation (observed, so it is spent even if the read fails next), then a
    /// read while the last one was not advanced. Returns the error to throw, or null (lock held).
    /// </summary>
    private Exception? TakeReadResult(ref ReadResult result, CancellationToken canceledBy)
    {
        if (_writerCompleted && _writerError is not null)
        {
            return _writerError;
        }

        bool canceled = _cancelNextRead || canceledBy.IsCancellationRequested;
        _cancelNextRead = false;
        if (_readState == ReadState.Active)
        {
            return new InvalidOperationException(AlreadyReadingMessage);
        }

        // A cancelled read hands out its buffer but need not be advanced.
        _readState = canceled ? ReadState.Tentative : ReadState.Active;
        if (canceledBy.IsCancellationRequested)
        {
            return new OperationCanceledException(canceledBy);
        }

        result = new ReadResult(GetBuffer(), canceled, _writerCompleted);
        return null;
    }

    /// <summary>Completes the read that waited (lock not held: its continuation may run inline).</summary>
    private void CompletePendingRead(in ReadResult result, Exception? error)
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

    private static void ThrowIfFailed(Exception? error)
    {
        if (error is not null)
        {
            throw error;
        }
    }

    private const string AlreadyReadingMessage = "Reading is already in progress: advance the last read's buffer first.";

    private static void ThrowAlreadyReading() => throw new InvalidOperationException(AlreadyReadingMessage);

    private static Segment? SegmentOf(in SequencePosition position) => position.GetObject() switch
    {
        null => null,
        Segment segment => segment,
        _ => throw new InvalidOperationException("The position is not one this reader handed out."),
    };

    private ReadOnlySequence<byte> GetBuffer()
        => _head is null
            ? default
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

    /// <summary>Where the reader is between a read and its AdvanceTo (Pipe's reading states).</summary>
    private enum ReadState : byte
    {
        None,      // no read to complete: AdvanceTo throws
        Tentative, // a cancelled read, or a TryRead that found nothing: AdvanceTo may follow or not
        Active,    // a read handed out a buffer: the next read must wait for its AdvanceTo
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
