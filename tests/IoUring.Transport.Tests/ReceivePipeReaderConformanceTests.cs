using System;
using System.Buffers;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.IO.Pipelines;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using IoUring.FunctionalTests;
using IoUring.Transport.Internal;
using Xunit;

namespace IoUring.Transport.Tests;

/// <summary>
/// <see cref="ReceivePipeReader"/> against the reader it imitates, <see cref="Pipe"/>'s: seeded
/// random sequences of appends, reads, advances, cancellations, completions and TryReads, the
/// writer's side on a thread of its own as the ring thread is, must give the same bytes,
/// IsCanceled, IsCompleted and exceptions from both; and under a free-running writer both must
/// deliver every byte in order. Set RECEIVE_READER_CONFORMANCE_SECONDS to run each test's seeds for
/// that long (the default is a fixed set of seeds that takes about a second).
/// </summary>
public sealed class ReceivePipeReaderConformanceTests
{
    private const int DefaultSeeds = 300;
    private const int StepsPerSeed = 400;
    private static readonly TimeSpan s_wait = TestWait.Default; // for what must complete (a read, a flush, the writer)
    private static readonly bool s_longRun = Environment.GetEnvironmentVariable("RECEIVE_READER_CONFORMANCE_SECONDS") is not null;

    [Fact]
    public void BothReadersAgreeOnEveryStepOfRandomSequences()
    {
        using var writer = new WriterThread();
        int seeds = 0;
        foreach (int seed in Seeds())
        {
            RunSequence(seed, writer);
            seeds++;
        }

        Assert.True(seeds > 0);
        TestContext.Current.TestOutputHelper?.WriteLine($"{seeds} seeds of {StepsPerSeed} steps agreed");
    }

    [Fact]
    public void BothReadersDeliverEveryByteInOrderUnderAConcurrentWriter()
    {
        foreach (int seed in s_longRun ? Seeds() : Seeds().Take(40))
        {
            var random = new Random(seed);
            byte[][] chunks = Enumerable.Range(0, 300).Select(i => Chunk(random, i * 64L)).ToArray();
            Exception? writerError = random.Next(3) == 0 ? new IOException("reset") : null;
            bool inline = random.Next(2) == 0;
            foreach (ISubject subject in new ISubject[] { new PipeSubject(inline), new ReceiveSubject(inline) })
            {
                using (subject)
                {
                    ReadConcurrently(subject, chunks, writerError, seed);
                }
            }
        }
    }

    private static IEnumerable<int> Seeds()
    {
        string? seconds = Environment.GetEnvironmentVariable("RECEIVE_READER_CONFORMANCE_SECONDS");
        if (!s_longRun)
        {
            for (int seed = 1; seed <= DefaultSeeds; seed++)
            {
                yield return seed;
            }

            yield break;
        }

        var elapsed = Stopwatch.StartNew();
        int first = Environment.TickCount;
        for (int i = 0; elapsed.Elapsed < TimeSpan.FromSeconds(double.Parse(seconds!, System.Globalization.CultureInfo.InvariantCulture)); i++)
        {
            yield return first + i;
        }
    }

    /// <summary>Bytes that say where in the stream they are, so a misplaced byte shows.</summary>
    private static byte[] Chunk(Random random, long offset)
    {
        var chunk = new byte[random.Next(1, 40)];
        for (int i = 0; i < chunk.Length; i++)
        {
            chunk[i] = (byte)((offset + i) * 7 % 251);
        }

        return chunk;
    }

    // ---- Lockstep: the same steps on both readers, compared after each ----

    private static void RunSequence(int seed, WriterThread writer)
    {
        var random = new Random(seed);
        bool inline = random.Next(2) == 0;
        using var pipe = new PipeSubject(inline);
        using var receive = new ReceiveSubject(inline);
        var both = new Side[] { new(pipe), new(receive) };
        var log = new List<string>();
        long appended = 0;
        bool writerDone = false;
        bool readerDone = false;
        bool pending = false;          // both readers wait on a ReadAsync
        bool reading = false;          // a read since the last advance: its buffer's positions may be used
        CancellationTokenSource? pendingToken = null;
        for (int step = 0; step < StepsPerSeed && !readerDone; step++)
        {
            int choice = random.Next(100);
            string what;
            if (pending)
            {
                // A waiting read: only the writer's side, a cancellation or its token can end it.
                if (!writerDone && choice < 55)
                {
                    // One append: Pipe builds a woken read's result when it is awaited, this reader
                    // when it wakes it, so a second append before the await would show in one only.
                    what = Append(writer, both, random, ref appended, single: true);
                }
                else if (!writerDone && choice < 60)
                {
                    what = CompleteWriter(writer, both, random);
                    writerDone = true;
                }
                else if (pendingToken is not null && choice < 80)
                {
                    what = "cancel the read's token";
                    CancellationTokenSource token = pendingToken;
                    writer.Run(token.Cancel);
                }
                else
                {
                    // CancelPendingRead comes from another thread in Kestrel (its timers).
                    what = "CancelPendingRead (writer thread)";
                    writer.Run(() => Each(both, s => s.Subject.Reader.CancelPendingRead()));
                }

                log.Add(what);
                reading |= Compare(seed, log, both.Select(s => s.AwaitPending()).ToArray()).StartsARead;
                pending = false;
                pendingToken?.Dispose();
                pendingToken = null;
                continue;
            }

            if (!writerDone && choice < 30)
            {
                log.Add(Append(writer, both, random, ref appended));
                continue;
            }

            if (!writerDone && choice < 32)
            {
                log.Add(CompleteWriter(writer, both, random));
                writerDone = true;
                continue;
            }

            if (choice < 50)
            {
                bool withToken = random.Next(3) == 0;
                log.Add(withToken ? "ReadAsync(token)" : "ReadAsync()");
                CancellationTokenSource? token = withToken ? new CancellationTokenSource() : null;
                if (withToken && random.Next(10) == 0)
                {
                    token!.Cancel();
                    log[^1] += " already cancelled";
                }

                Outcome[] started = both.Select(s => s.StartRead(token?.Token ?? default)).ToArray();
                if (started.All(o => o.Kind == OutcomeKind.Pending))
                {
                    pending = true;
                    pendingToken = token;
                    continue;
                }

                token?.Dispose();
                // A token cancelled before the call ends it before it starts: no read to advance.
                reading |= Compare(seed, log, started).StartsARead && !(token?.IsCancellationRequested ?? false);
                continue;
            }

            if (choice < 62)
            {
                log.Add("TryRead");
                reading |= Compare(seed, log, both.Select(s => s.TryRead()).ToArray()).StartsARead;
                continue;
            }

            if (choice < 88)
            {
                // With no read since the last advance only an empty buffer's positions: Pipe applies
                // an advance with no read before it throws, this reader throws first (both refuse it).
                (long consumed, long examined, string name) = PickAdvance(random, reading ? both[0].LastBuffer : 0);
                log.Add($"AdvanceTo({name})");
                if (Compare(seed, log, both.Select(s => s.Advance(consumed, examined)).ToArray()).Kind == OutcomeKind.Returned)
                {
                    reading = false;
                }

                continue;
            }

            if (choice < 94)
            {
                log.Add("CancelPendingRead");
                Each(both, s => s.Subject.Reader.CancelPendingRead());
                continue;
            }

            if (choice < 98)
            {
                log.Add("CancelPendingRead (writer thread)");
                writer.Run(() => Each(both, s => s.Subject.Reader.CancelPendingRead()));
                continue;
            }

            if (choice < 100)
            {
                log.Add("Complete reader");
                Each(both, s => s.Subject.Reader.Complete());
                readerDone = true;
                // Then every use is refused alike.
                log.Add("TryRead after Complete");
                Compare(seed, log, both.Select(s => s.TryRead()).ToArray());
                log.Add("ReadAsync after Complete");
                Compare(seed, log, both.Select(s => s.StartRead(default)).ToArray());
            }
        }

        if (pending)
        {
            log.Add("CancelPendingRead to end");
            Each(both, s => s.Subject.Reader.CancelPendingRead());
            Compare(seed, log, both.Select(s => s.AwaitPending()).ToArray());
            pendingToken?.Dispose();
        }

        if (!readerDone)
        {
            Each(both, s => s.Subject.Reader.Complete());
        }

        if (!writerDone && random.Next(2) == 0)
        {
            Append(writer, both, random, ref appended); // refused by a completed reader: the caller keeps it
        }

        receive.AssertEverythingCameBack(seed);
    }

    private static string Append(WriterThread writer, Side[] both, Random random, ref long appended, bool single = false)
    {
        byte[] chunk = Chunk(random, appended);
        appended += chunk.Length;
        int mode = random.Next(single ? 2 : 3);
        writer.Run(() => Each(both, s => s.Subject.Append(chunk, mode)));
        return $"Append {chunk.Length} bytes (mode {mode})";
    }

    private static string CompleteWriter(WriterThread writer, Side[] both, Random random)
    {
        Exception? error = random.Next(2) == 0 ? new IOException("reset by peer") : null;
        writer.Run(() => Each(both, s => s.Subject.CompleteWriter(error)));
        return error is null ? "CompleteWriter()" : "CompleteWriter(error)";
    }

    /// <summary>
    /// Offsets into the last buffer a read handed out (the same on both sides, as the comparison has
    /// checked): start, end, middle, anywhere, sometimes examined before consumed; -1 stands for
    /// a position of an empty buffer (default).
    /// </summary>
    private static (long Consumed, long Examined, string Name) PickAdvance(Random random, long length)
    {
        if (length == 0)
        {
            return (-1, -1, "empty buffer's positions");
        }

        switch (random.Next(7))
        {
            case 0:
                return (0, 0, "start");
            case 1:
                return (length, length, "end");
            case 2:
                return (0, length, "start, examined end");
            case 3:
                return (length / 2, length / 2, "middle");
            case 4:
                return (-1, -1, "default positions");
            case 5:
            {
                long consumed = random.NextInt64(0, length + 1);
                long examined = random.NextInt64(0, length + 1);
                return (consumed, examined, $"{consumed}, examined {examined}"); // examined < consumed: refused
            }

            default:
            {
                long consumed = random.NextInt64(0, length + 1);
                long examined = random.NextInt64(consumed, length + 1);
                return (consumed, examined, $"{consumed}, examined {examined}");
            }
        }
    }

    private static void Each(Side[] both, Action<Side> action)
    {
        foreach (Side side in both)
        {
            action(side);
        }
    }

    /// <summary>Fails unless both readers had the same outcome; returns it.</summary>
    private static Outcome Compare(int seed, List<string> log, Outcome[] outcomes)
    {
        Outcome expected = outcomes[0]; // Pipe
        Outcome actual = outcomes[1];   // ReceivePipeReader
        log[^1] += $" -> {expected.Kind} {(expected.Detail.Length > 60 ? expected.Detail[..60] + "..." : expected.Detail)}";
        if (!expected.Equals(actual))
        {
            Assert.Fail(
                $"seed {seed}: after {log.Count} steps the readers differ.\n" +
                $"Pipe:              {expected}\nReceivePipeReader: {actual}\n" +
                $"last steps:\n  {string.Join("\n  ", log.TakeLast(25))}");
        }

        return expected;
    }

    // ---- Concurrent: a free-running writer, each reader on its own ----

    private static void ReadConcurrently(ISubject subject, byte[][] chunks, Exception? writerError, int seed)
    {
        var random = new Random(seed);
        byte[] expected = chunks.SelectMany(c => c).ToArray();
        var writerThread = new Thread(() =>
        {
            var writerRandom = new Random(seed + 1);
            for (int i = 0; i < chunks.Length; i++)
            {
                subject.Append(chunks[i], writerRandom.Next(3));
                if (writerRandom.Next(4) == 0)
                {
                    Thread.Yield();
                }
            }

            subject.CompleteWriter(writerError);
        });
        writerThread.Start();

        PipeReader reader = subject.Reader;
        var received = new List<byte>();
        while (true)
        {
            ReadResult result;
            try
            {
                if (random.Next(4) == 0)
                {
                    if (!reader.TryRead(out result))
                    {
                        continue;
                    }
                }
                else
                {
                    ValueTask<ReadResult> read = reader.ReadAsync();
                    if (random.Next(8) == 0)
                    {
                        reader.CancelPendingRead();
                    }

                    result = read.AsTask().WaitAsync(s_wait).GetAwaiter().GetResult();
                }
            }
            catch (IOException ex) when (writerError is not null && ex.Message == writerError.Message)
            {
                // The writer's error ends the stream; what came before it is all in order.
                Assert.Equal(expected.Take(received.Count), received);
                break;
            }

            ReadOnlySequence<byte> buffer = result.Buffer;
            Assert.True(received.Count + buffer.Length <= expected.Length, $"{subject}: seed {seed}: more bytes than were written");
            Assert.Equal(expected.AsSpan(received.Count, (int)buffer.Length).ToArray(), buffer.ToArray());
            if (result.IsCompleted && !result.IsCanceled)
            {
                Assert.Null(writerError);
                Assert.Equal(expected.Length, received.Count + buffer.Length);
            }

            long consumed = random.Next(3) == 0 ? buffer.Length : random.NextInt64(0, buffer.Length + 1);
            long examined = random.Next(3) == 0 ? buffer.Length : random.NextInt64(consumed, buffer.Length + 1);
            received.AddRange(buffer.Slice(0, consumed).ToArray()); // before the advance gives the memory back
            reader.AdvanceTo(buffer.GetPosition(consumed), buffer.GetPosition(examined));
            if (result.IsCompleted && consumed == buffer.Length)
            {
                Assert.Equal(expected, received);
                break;
            }
        }

        reader.Complete();
        Assert.True(writerThread.Join(s_wait), "the writer did not finish");
        (subject as ReceiveSubject)?.AssertEverythingCameBack(seed);
    }

    // ---- The two subjects ----

    private interface ISubject : IDisposable
    {
        PipeReader Reader { get; }

        /// <summary>Writer side: appends <paramref name="data"/>; <paramref name="mode"/> picks how (the receive reader's buffer kinds).</summary>
        void Append(byte[] data, int mode);

        void CompleteWriter(Exception? error);
    }

    private sealed class PipeSubject(bool inline) : ISubject
    {
        private readonly Pipe _pipe = new(new PipeOptions(
            pauseWriterThreshold: 0,
            readerScheduler: inline ? PipeScheduler.Inline : PipeScheduler.ThreadPool,
            writerScheduler: PipeScheduler.Inline,
            useSynchronizationContext: false));

        public PipeReader Reader => _pipe.Reader;

        /// <summary>One write and flush per append of the receive reader (mode 2 is two).</summary>
        public void Append(byte[] data, int mode)
        {
            int half = mode == 2 ? data.Length / 2 : 0;
            if (half > 0)
            {
                Flush(data[..half]);
            }

            Flush(data[half..]);
        }

        private void Flush(byte[] data)
        {
            _pipe.Writer.Write(data);
            // Without a pause threshold a flush completes at once.
            Assert.True(_pipe.Writer.FlushAsync().AsTask().Wait(s_wait), "the flush did not complete");
        }

        public void CompleteWriter(Exception? error) => _pipe.Writer.Complete(error);

        public void Dispose()
        {
        }

        public override string ToString() => "Pipe";
    }

    /// <summary>The reader as the connection uses it, with a ledger of the buffers it holds.</summary>
    private sealed class ReceiveSubject : ISubject, IReceiveBufferOwner
    {
        private readonly ReceivePipeReader _reader;
        private readonly PinnedBlockMemoryPool _pool = new();
        private readonly ConcurrentDictionary<int, bool> _outstanding = new(); // provided buffer ids the reader holds
        private readonly ConcurrentQueue<string> _errors = new();
        private int _nextId;

        public ReceiveSubject(bool inline) => _reader = new ReceivePipeReader(this, long.MaxValue, inline);

        public PipeReader Reader => _reader;

        /// <summary>Mode 0: one provided buffer; 1: a copy in a pool block; 2: split over several provided buffers.</summary>
        public void Append(byte[] data, int mode)
        {
            switch (mode)
            {
                case 0:
                    AppendRingBuffer(data);
                    break;
                case 1:
                    IMemoryOwner<byte> block = _pool.Rent(data.Length);
                    data.CopyTo(block.Memory.Span);
                    if (!_reader.Append(block.Memory[..data.Length], bufferId: -1, block))
                    {
                        block.Dispose(); // refused: the caller keeps it
                    }

                    break;
                default:
                    int half = data.Length / 2;
                    if (half > 0)
                    {
                        AppendRingBuffer(data[..half]);
                    }

                    AppendRingBuffer(data[half..]);
                    break;
            }
        }

        private void AppendRingBuffer(byte[] data)
        {
            int id = Interlocked.Increment(ref _nextId) & 0xFFFF;
            if (!_outstanding.TryAdd(id, true))
            {
                _errors.Enqueue($"buffer {id} handed out twice");
            }

            if (!_reader.Append(data, id, owner: null))
            {
                _outstanding.TryRemove(id, out _); // refused: the caller keeps it
            }
        }

        public void CompleteWriter(Exception? error) => _reader.CompleteWriter(error);

        public void ReturnReceiveBuffers(List<int> bufferIds)
        {
            foreach (int id in bufferIds)
            {
                if (!_outstanding.TryRemove(id, out _))
                {
                    _errors.Enqueue($"buffer {id} returned but not held");
                }
            }
        }

        public void ResumeReceiveIfPaused()
        {
        }

        public void InputCompletedByApplication()
        {
        }

        public void AssertEverythingCameBack(int seed)
        {
            Assert.True(_errors.IsEmpty, $"seed {seed}: {string.Join("; ", _errors)}");
            Assert.True(_outstanding.IsEmpty, $"seed {seed}: buffers never returned: {string.Join(", ", _outstanding.Keys)}");
            Assert.Equal(0, _reader.HeldRingBuffers);
            Assert.Equal(0, _pool.RentedBlocks);
        }

        public void Dispose() => _pool.Dispose();

        public override string ToString() => "ReceivePipeReader";
    }

    // ---- One reader's side of the lockstep run ----

    private enum OutcomeKind
    {
        Returned,
        Pending,
        Threw,
    }

    private readonly record struct Outcome(OutcomeKind Kind, string Detail)
    {
        public static Outcome Of(ReadResult result)
            => new(OutcomeKind.Returned, $"{Convert.ToHexString(result.Buffer.ToArray())} canceled={result.IsCanceled} completed={result.IsCompleted}");

        public static Outcome Of(Exception ex) => new(OutcomeKind.Threw, ex switch
        {
            OperationCanceledException => nameof(OperationCanceledException),
            InvalidOperationException => nameof(InvalidOperationException),
            _ => $"{ex.GetType().Name}: {ex.Message}",
        });

        public static Outcome Done(string what) => new(OutcomeKind.Returned, what);

        /// <summary>
        /// The read left a buffer whose positions an AdvanceTo may use: it returned (a TryRead that
        /// found nothing is a tentative read too), or a token cancelled it while it waited.
        /// </summary>
        public bool StartsARead => Kind == OutcomeKind.Returned || Detail == nameof(OperationCanceledException);
    }

    private sealed class Side(ISubject subject)
    {
        private ReadOnlySequence<byte> _buffer;
        private ValueTask<ReadResult> _pending;

        public ISubject Subject { get; } = subject;

        /// <summary>Length of the buffer the last successful read handed out.</summary>
        public long LastBuffer => _buffer.Length;

        public Outcome StartRead(CancellationToken token)
        {
            try
            {
                ValueTask<ReadResult> read = Subject.Reader.ReadAsync(token);
                if (!read.IsCompleted)
                {
                    _pending = read;
                    return new Outcome(OutcomeKind.Pending, "");
                }

                return Took(read.GetAwaiter().GetResult());
            }
            catch (Exception ex)
            {
                return Outcome.Of(ex);
            }
        }

        public Outcome AwaitPending()
        {
            try
            {
                return Took(_pending.AsTask().WaitAsync(s_wait).GetAwaiter().GetResult());
            }
            catch (TimeoutException)
            {
                return new Outcome(OutcomeKind.Pending, "still waiting after 10 s");
            }
            catch (Exception ex)
            {
                return Outcome.Of(ex);
            }
        }

        public Outcome TryRead()
        {
            try
            {
                return Subject.Reader.TryRead(out ReadResult result) ? Took(result) : Outcome.Done("nothing");
            }
            catch (Exception ex)
            {
                return Outcome.Of(ex);
            }
        }

        public Outcome Advance(long consumed, long examined)
        {
            try
            {
                SequencePosition c = consumed < 0 ? default : _buffer.GetPosition(consumed);
                SequencePosition e = examined < 0 ? default : _buffer.GetPosition(examined);
                // What is left of the buffer stays valid (the next pick may use its positions), but
                // it must be cut before the advance gives the consumed memory back.
                ReadOnlySequence<byte> rest = consumed <= 0 ? _buffer : consumed == _buffer.Length ? default : _buffer.Slice(consumed);
                Subject.Reader.AdvanceTo(c, e);
                _buffer = rest;
                return Outcome.Done("advanced");
            }
            catch (Exception ex)
            {
                return Outcome.Of(ex);
            }
        }

        private Outcome Took(ReadResult result)
        {
            _buffer = result.Buffer;
            return Outcome.Of(result);
        }
    }

    /// <summary>The ring thread of these tests: runs the writer's side, one step at a time.</summary>
    private sealed class WriterThread : IDisposable
    {
        private readonly BlockingCollection<(Action Action, ManualResetEventSlim Done)> _work = [];
        private readonly Thread _thread;
        private Exception? _error;

        public WriterThread()
        {
            _thread = new Thread(() =>
            {
                foreach ((Action action, ManualResetEventSlim done) in _work.GetConsumingEnumerable())
                {
                    try
                    {
                        action();
                    }
                    catch (Exception ex)
                    {
                        _error = ex;
                    }

                    done.Set();
                }
            })
            { IsBackground = true, Name = "test ring thread" };
            _thread.Start();
        }

        public void Run(Action action)
        {
            using var done = new ManualResetEventSlim();
            _work.Add((action, done));
            Assert.True(done.Wait(s_wait), "the writer's step did not finish");
            if (_error is not null)
            {
                Exception error = _error;
                _error = null;
                throw new InvalidOperationException("The writer's step failed.", error);
            }
        }

        public void Dispose()
        {
            _work.CompleteAdding();
            _thread.Join();
            _work.Dispose();
        }
    }
}
