using System;
using System.Collections.Generic;
using System.IO.Pipelines;
using System.Threading.Tasks;
using BenchmarkDotNet.Attributes;
using IoUring.Transport.Internal;

namespace IoUring.Benchmarks;

/// <summary>
/// Transport.Input's reader over provided buffers, as one request goes through it: the ring thread
/// appends a received buffer, the application reads and advances past it, the buffer id goes back
/// to the owner (the connection, here a stand-in that only counts). Per operation = one buffer.
/// </summary>
[MemoryDiagnoser]
public class ReceivePipeReaderBenchmarks
{
    private readonly byte[] _buffer = GC.AllocateArray<byte>(4096, pinned: true);
    private ReceivePipeReader _reader = null!;
    private Owner _owner = null!;

    [GlobalSetup]
    public void Setup()
    {
        _owner = new Owner();
        _reader = new ReceivePipeReader(_owner, long.MaxValue, inlineContinuations: true);
    }

    /// <summary>Data already there: Append, then ReadAsync completes synchronously, AdvanceTo the end.</summary>
    [Benchmark]
    public long AppendReadAdvance()
    {
        _reader.Append(_buffer.AsMemory(0, 100), 7, null);
        ReadResult result = Completed(_reader.ReadAsync());
        _reader.AdvanceTo(result.Buffer.End);
        return result.Buffer.Length;
    }

    /// <summary>The reader waits first (the keep-alive case): ReadAsync pends, Append completes it, AdvanceTo the end.</summary>
    [Benchmark]
    public long PendingReadAppendAdvance()
    {
        ValueTask<ReadResult> read = _reader.ReadAsync();
        _reader.Append(_buffer.AsMemory(0, 100), 7, null);
        ReadResult result = Completed(read);
        _reader.AdvanceTo(result.Buffer.End);
        return result.Buffer.Length;
    }

    /// <summary>Sixteen pipelined requests' worth in four buffers, consumed in one advance.</summary>
    [Benchmark(OperationsPerInvoke = 4)]
    public long FourBuffersOneAdvance()
    {
        for (int i = 0; i < 4; i++)
        {
            _reader.Append(_buffer.AsMemory(i * 1024, 1024), i, null);
        }

        ReadResult result = Completed(_reader.ReadAsync());
        _reader.AdvanceTo(result.Buffer.End);
        return result.Buffer.Length;
    }

    // Every read here has its data (or its wake-up, with inline continuations) before it is looked at.
    private static ReadResult Completed(ValueTask<ReadResult> read)
        => read.IsCompleted ? read.GetAwaiter().GetResult() : throw new InvalidOperationException("The read should have completed.");

    private sealed class Owner : IReceiveBufferOwner
    {
        public long Returned;

        public void ReturnReceiveBuffers(List<int> bufferIds) => Returned += bufferIds.Count;

        public void ResumeReceiveIfPaused()
        {
        }

        public void InputCompletedByApplication()
        {
        }
    }
}
