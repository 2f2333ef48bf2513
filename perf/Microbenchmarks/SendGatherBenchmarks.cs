using System;
using System.Buffers;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using IoUring.Interop;
using IoUring.Transport.Internal;

namespace IoUring.Benchmarks;

/// <summary>
/// Building one sendmsg's iovecs from the output pipe's sequence (SendGather.Fill, as the send
/// loop calls it) over pinned 4 KiB blocks like the transport's pool; then the handles released as
/// the send's GetResult does. Per operation = one sendmsg's gather. (Over plain arrays instead of
/// pool blocks, each segment's Pin allocates a pinning GC handle: about 50 ns a segment here.)
/// </summary>
[MemoryDiagnoser]
public unsafe class SendGatherBenchmarks
{
    private readonly MemoryHandle[] _handles = new MemoryHandle[64];
    private readonly ReadOnlyMemory<byte>[] _segments = new ReadOnlyMemory<byte>[64];
    private readonly PinnedBlockMemoryPool _pool = new();
    private IoVec* _iovecs;
    private ReadOnlySequence<byte> _sequence;

    [Params(1, 16, 64)]
    public int Segments { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _iovecs = (IoVec*)NativeMemory.AllocZeroed((nuint)(64 * sizeof(IoVec)));
        Chunk? first = null;
        Chunk? last = null;
        for (int i = 0; i < Segments; i++)
        {
            var chunk = new Chunk(_pool.Rent().Memory, last);
            first ??= chunk;
            last = chunk;
        }

        _sequence = Segments == 1
            ? new ReadOnlySequence<byte>(first!.Memory)
            : new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.Free(_iovecs);
        _pool.Dispose();
    }

    [Benchmark]
    public int Gather()
    {
        int count = SendGather.Fill(in _sequence, _iovecs, _handles, _segments, out int total);
        for (int i = 0; i < count; i++)
        {
            _handles[i].Dispose();
        }

        return total;
    }

    private sealed class Chunk : ReadOnlySequenceSegment<byte>
    {
        public Chunk(ReadOnlyMemory<byte> block, Chunk? previous)
        {
            Memory = block;
            if (previous is not null)
            {
                RunningIndex = previous.RunningIndex + previous.Memory.Length;
                previous.Next = this;
            }
        }
    }
}
