using System;
using BenchmarkDotNet.Attributes;
using IoUring.Interop;

namespace IoUring.Benchmarks;

/// <summary>
/// SQE preparation and submission on a real ring: NOPs queued, submitted with one io_uring_enter
/// that also waits for their completions, and reaped. The same ring setup as a ring thread's
/// (SINGLE_ISSUER | DEFER_TASKRUN, registered ring fd). Per operation = per NOP.
/// </summary>
[MemoryDiagnoser]
public unsafe class RingBenchmarks
{
    private Ring _ring = null!;
    private Cqe[] _batch = null!;

    [Params(1, 32)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        // BenchmarkDotNet runs setup and workload on the same thread, as SINGLE_ISSUER requires.
        _ring = Ring.Create(new RingOptions { SqEntries = 256, CqEntries = 2048 });
        _ring.RegisterRingFd();
        _batch = new Cqe[256];
    }

    [GlobalCleanup]
    public void Cleanup() => _ring.Dispose();

    /// <summary>Batch NOPs: GetSqe + PrepNop each, one enter (submit and wait), one CQ sweep.</summary>
    [Benchmark(OperationsPerInvoke = 32)]
    public int NopRoundTrip()
    {
        int reaped = 0;
        for (int round = 0; round < 32 / Batch; round++)
        {
            for (int i = 0; i < Batch; i++)
            {
                Sqe* sqe = _ring.GetSqe();
                sqe->PrepNop();
                sqe->UserData = (ulong)i;
            }

            _ = _ring.SubmitAndWait((uint)Batch);
            int got = 0;
            while (got < Batch)
            {
                got += _ring.CopyCompletions(_batch.AsSpan(got));
            }

            reaped += got;
        }

        if (reaped != 32)
        {
            throw new InvalidOperationException("lost completions");
        }

        return reaped;
    }

    /// <summary>SQE preparation alone, into memory of our own (no ring, no syscall): PrepSendMsg + user_data.</summary>
    [Benchmark(OperationsPerInvoke = 32)]
    public ulong PrepareSendMsg()
    {
        MsgHdr msg = default;
        Sqe* sqes = stackalloc Sqe[32];
        ulong sum = 0;
        for (int i = 0; i < 32; i++)
        {
            Sqe* sqe = &sqes[i];
            sqe->PrepSendMsg(3, &msg, 0x4000);
            sqe->UserData = (ulong)i;
            sum += sqe->UserData;
        }

        return sum;
    }
}
