using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using IoUring.Interop;
using IoUring.Transport.Internal;

namespace IoUring.Benchmarks;

/// <summary>
/// Completion dispatch as the ring thread does it (RingThread.Loop and Dispatch): a batch of real
/// CQEs copied out with one head store, each user_data decoded into kind, slot and generation,
/// checked against the slot's generation, and handed to the slot's handler through the interface.
/// The CQEs come from NOPs carrying connection user_data; per operation = per CQE.
/// </summary>
[MemoryDiagnoser]
public unsafe class DispatchBenchmarks
{
    private const int Batch = 64;
    private const int Slots = 512;

    private Ring _ring = null!;
    private Cqe[] _batch = null!;
    private readonly List<Handler?> _slots = [];
    private readonly List<uint> _generations = [];

    [GlobalSetup]
    public void Setup()
    {
        _ring = Ring.Create(new RingOptions { SqEntries = 256, CqEntries = 2048 });
        _ring.RegisterRingFd();
        _batch = new Cqe[256];
        for (int i = 0; i < Slots; i++)
        {
            _slots.Add(new Handler());
            _generations.Add((uint)i & 7);
        }
    }

    [GlobalCleanup]
    public void Cleanup() => _ring.Dispose();

    /// <summary>NOPs submitted and waited for, then reaped and dispatched; <see cref="SubmitOnly"/> is the same without dispatch.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public int SubmitAndDispatch()
    {
        Produce();
        int count = _ring.CopyCompletions(_batch);
        for (int i = 0; i < count; i++)
        {
            Dispatch(in _batch[i]);
        }

        return count;
    }

    /// <summary>The same NOPs reaped without dispatch: the difference to <see cref="SubmitAndDispatch"/> is dispatch.</summary>
    [Benchmark(OperationsPerInvoke = Batch, Baseline = true)]
    public int SubmitOnly()
    {
        Produce();
        return _ring.CopyCompletions(_batch);
    }

    private void Produce()
    {
        for (int i = 0; i < Batch; i++)
        {
            Sqe* sqe = _ring.GetSqe();
            sqe->PrepNop();
            int slot = (i * 97) % Slots; // spread over the slots like interleaved connections
            sqe->UserData = UserData.Encode(OpKind.Recv, slot, (uint)slot & 7);
        }

        _ = _ring.SubmitAndWait(Batch);
    }

    private void Dispatch(in Cqe cqe)
    {
        OpKind kind = UserData.Kind(cqe.UserData);
        int slot = UserData.Slot(cqe.UserData);
        if ((uint)slot >= (uint)_slots.Count || _generations[slot] != UserData.Generation(cqe.UserData))
        {
            return;
        }

        _slots[slot]?.OnCompletion(kind, in cqe);
    }

    private sealed class Handler
    {
        public long Bytes;

        public void OnCompletion(OpKind kind, in Cqe cqe)
        {
            if (kind == OpKind.Recv)
            {
                Bytes += cqe.Res + 1;
            }
        }
    }
}
