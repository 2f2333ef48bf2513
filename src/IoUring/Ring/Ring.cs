using System;
using System.Threading;
using System.Runtime.CompilerServices;
using IoUring.Interop;
using static IoUring.Interop.IoUringConstants;

namespace IoUring;

/// <summary>
/// One io_uring instance: the mmap'd submission and completion rings and the SQE array.
/// </summary>
/// <remarks>
/// <para>Not thread-safe, by design. With IORING_SETUP_SINGLE_ISSUER the kernel binds the ring to
/// the thread that creates it (or enables it, with <see cref="RingOptions.StartDisabled"/>), and
/// with IORING_SETUP_DEFER_TASKRUN completions are only posted while that thread is inside
/// io_uring_enter with GETEVENTS (io_uring_setup(2)). Create, submit to, reap and dispose a ring
/// on one thread. Other threads reach it through a queue and a wake-up, never through this type.</para>
/// <para>Shared memory protocol (io_uring(7), "Submission queue" and "Completion queue"):
/// the application owns the SQ tail and the CQ head, the kernel owns the SQ head and the CQ tail.
/// Each side reads the other's index with an acquire load and publishes its own with a release
/// store, so the entries written before a store are visible to whoever observes the new index.
/// On x86_64 both compile to plain moves; the ordering they forbid is the compiler's and, on
/// weaker CPUs (AArch64), the processor's.</para>
/// </remarks>
internal sealed unsafe class Ring : IDisposable
{
    // SQ ring fields (pointers into the shared mapping).
    private readonly uint* _sqHead;    // kernel writes: next SQE it will consume; read with acquire.
    private readonly uint* _sqTail;    // we write: one past the last SQE published; release store.
    private readonly uint* _sqFlags;   // kernel writes: IORING_SQ_{NEED_WAKEUP,CQ_OVERFLOW,TASKRUN}.
    private readonly uint* _sqDropped; // kernel writes: SQEs it skipped as invalid.
    private readonly uint _sqMask;
    private readonly Sqe* _sqes;       // we write entries [_sqHead.._sqeTail); kernel reads after the tail store.
    private uint _sqeTail;             // ours only: next SQE to hand out from GetSqe.

    // CQ ring fields.
    private readonly uint* _cqHead;    // we write: next CQE we will read; release store after reading.
    private readonly uint* _cqTail;    // kernel writes: one past the last CQE posted; read with acquire.
    private readonly uint* _cqOverflow;// kernel writes: CQEs dropped (only without IORING_FEAT_NODROP).
    private readonly uint _cqMask;
    private readonly Cqe* _cqes;       // kernel writes entries before its tail store; we read after our acquire.

    private readonly void* _sqRingPtr;
    private readonly nuint _sqRingSize;
    private readonly void* _cqRingPtr;   // == _sqRingPtr with IORING_FEAT_SINGLE_MMAP
    private readonly nuint _cqRingSize;
    private readonly void* _sqesPtr;
    private readonly nuint _sqesSize;

    private int _enterFd;        // the ring fd, or its registered index after RegisterRingFd.
    private uint _enterFlags;    // IORING_ENTER_REGISTERED_RING once registered.
    private int _registeredOnThread = -1; // the managed thread whose io_uring context holds the registered fd.
    private bool _disposed;

    private Ring(int fd, in IoUringParams p)
    {
        Fd = fd;
        _enterFd = fd;
        SetupFlags = p.Flags;
        Features = p.Features;
        SqEntries = p.SqEntries;
        CqEntries = p.CqEntries;
        SqHeadOffset = p.SqOff.Head;
        SqTailOffset = p.SqOff.Tail;
        CqHeadOffset = p.CqOff.Head;
        CqTailOffset = p.CqOff.Tail;
        CqesOffset = p.CqOff.Cqes;

        _sqRingSize = p.SqOff.Array + p.SqEntries * sizeof(uint);
        _cqRingSize = p.CqOff.Cqes + p.CqEntries * (uint)sizeof(Cqe);
        bool singleMmap = (p.Features & IoUringConstants.Features.SingleMmap) != 0;
        if (singleMmap)
        {
            _sqRingSize = _cqRingSize = Math.Max(_sqRingSize, _cqRingSize);
        }

        _sqRingPtr = Map(fd, _sqRingSize, MmapOffsets.SqRing);
        try
        {
            _cqRingPtr = singleMmap ? _sqRingPtr : Map(fd, _cqRingSize, MmapOffsets.CqRing);
            _sqesSize = p.SqEntries * (uint)sizeof(Sqe);
            _sqesPtr = Map(fd, _sqesSize, MmapOffsets.Sqes);
        }
        catch
        {
            UnmapAll();
            throw;
        }

        byte* sq = (byte*)_sqRingPtr;
        _sqHead = (uint*)(sq + p.SqOff.Head);
        _sqTail = (uint*)(sq + p.SqOff.Tail);
        _sqFlags = (uint*)(sq + p.SqOff.Flags);
        _sqDropped = (uint*)(sq + p.SqOff.Dropped);
        _sqMask = *(uint*)(sq + p.SqOff.RingMask);
        _sqes = (Sqe*)_sqesPtr;

        // The SQ index array maps ring slots to SQE indices. We always use the identity mapping,
        // written once here, so every later submission only touches the SQEs and the tail
        // (what IORING_SETUP_NO_SQARRAY makes implicit on 6.6+).
        uint* array = (uint*)(sq + p.SqOff.Array);
        for (uint i = 0; i < p.SqEntries; i++)
        {
            array[i] = i;
        }

        byte* cq = (byte*)_cqRingPtr;
        _cqHead = (uint*)(cq + p.CqOff.Head);
        _cqTail = (uint*)(cq + p.CqOff.Tail);
        _cqOverflow = (uint*)(cq + p.CqOff.Overflow);
        _cqMask = *(uint*)(cq + p.CqOff.RingMask);
        _cqes = (Cqe*)(cq + p.CqOff.Cqes);

        _sqeTail = *_sqTail;
    }

    /// <summary>io_uring_enter calls made (written by the owning thread; readable from any for metrics).</summary>
    public long EnterCalls { get; private set; }

    /// <summary>SQEs the kernel accepted (written by the owning thread; readable from any for metrics).</summary>
    public long Submitted { get; private set; }

    /// <summary>The io_uring file descriptor.</summary>
    public int Fd { get; }

    /// <summary>The IORING_SETUP_* flags the kernel accepted (after any fallback).</summary>
    public uint SetupFlags { get; }

    /// <summary>The IORING_FEAT_* flags the kernel reported.</summary>
    public uint Features { get; }

    public uint SqEntries { get; }

    public uint CqEntries { get; }

    /// <summary>SQ ring mask (SqEntries - 1), as the kernel wrote it in the ring mapping.</summary>
    public uint SqMask => _sqMask;

    /// <summary>CQ ring mask, as the kernel wrote it in the ring mapping.</summary>
    public uint CqMask => _cqMask;

    /// <summary>
    /// Where the SQ and CQ heads and tails and the CQEs are in the ring mapping (io_uring_params sq_off
    /// and cq_off): offsets from the start of the SQ/CQ header memory, which is also what an
    /// io_uring BPF loop program reaches as region IOU_REGION_CQ (io_uring/bpf-ops.c: ring_region,
    /// the memory IORING_OFF_SQ_RING maps).
    /// </summary>
    public uint SqTailOffset { get; }

    /// <inheritdoc cref="SqTailOffset"/>
    public uint SqHeadOffset { get; }

    /// <inheritdoc cref="SqTailOffset"/>
    public uint CqHeadOffset { get; }

    /// <inheritdoc cref="SqTailOffset"/>
    public uint CqTailOffset { get; }

    /// <inheritdoc cref="SqTailOffset"/>
    public uint CqesOffset { get; }

    /// <summary>Whether completions need this thread to enter with GETEVENTS (IORING_SETUP_DEFER_TASKRUN).</summary>
    public bool DeferTaskRun => (SetupFlags & Setup.DeferTaskRun) != 0;

    /// <summary>Whether <see cref="RegisterRingFd"/> succeeded, so enter skips the fd table lookup.</summary>
    public bool IsRingFdRegistered => (_enterFlags & Enter.RegisteredRing) != 0;

    /// <summary>SQEs the kernel dropped as invalid (io_uring(7)); should stay 0.</summary>
    public uint SqDropped => Volatile.Read(ref *_sqDropped);

    /// <summary>CQEs lost to overflow; always 0 with IORING_FEAT_NODROP (5.5+), which keeps them in the kernel instead.</summary>
    public uint CqOverflowCount => Volatile.Read(ref *_cqOverflow);

    /// <summary>The kernel holds completions that did not fit the CQ; entering with GETEVENTS moves them in as space frees.</summary>
    public bool CqOverflowPending => (Volatile.Read(ref *_sqFlags) & SqRingFlags.CqOverflow) != 0;

    /// <summary>CQEs ready to read.</summary>
    public uint CqReady => Volatile.Read(ref *_cqTail) - *_cqHead;

    /// <summary>SQEs handed out by <see cref="GetSqe"/> and not yet consumed by the kernel.</summary>
    public uint SqPending => _sqeTail - Volatile.Read(ref *_sqHead);

    /// <summary>Free SQEs.</summary>
    public uint SqSpaceLeft => SqEntries - SqPending;

    /// <summary>
    /// Sets up a ring on the calling thread. Refused flags fall back (DEFER_TASKRUN to
    /// COOP_TASKRUN, then without either); a kernel that cannot run io_uring at all throws
    /// <see cref="IoUringUnavailableException"/> naming the reason.
    /// </summary>
    public static Ring Create(RingOptions? options = null)
    {
        options ??= new RingOptions();
        uint baseFlags = Setup.SubmitAll | (options.CqEntries != 0 ? Setup.CqSize : 0) | (options.StartDisabled ? Setup.RDisabled : 0);
        ReadOnlySpan<uint> attempts = options.SingleIssuerDeferTaskRun
            ? [Setup.SingleIssuer | Setup.DeferTaskRun | Setup.TaskRunFlag, Setup.SingleIssuer | Setup.DeferTaskRun, Setup.CoopTaskRun | Setup.TaskRunFlag, 0]
            : [Setup.CoopTaskRun | Setup.TaskRunFlag, 0];

        int result = -Errno.EINVAL;
        foreach (uint extra in attempts)
        {
            IoUringParams p = default;
            p.Flags = baseFlags | extra;
            p.CqEntries = options.CqEntries;
            result = IoUringSyscalls.Setup(options.SqEntries, &p);
            if (result >= 0)
            {
                try
                {
                    return new Ring(result, p);
                }
                catch
                {
                    Libc.Close(result);
                    throw;
                }
            }

            // EINVAL: a flag this kernel does not know. Anything else will not improve with fewer flags.
            if (result != -Errno.EINVAL)
            {
                break;
            }
        }

        throw IoUringAvailability.Classify(-result, IoUringAvailability.SystemState.Current);
    }

    /// <summary>
    /// The next free SQE, its <c>user_data</c> zeroed and the rest zeroed by its <c>Prep…</c> call,
    /// or null when the SQ is full (then <see cref="Submit"/> and try again). The entry belongs to
    /// the caller until the next submit.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Sqe* GetSqe()
    {
        // Acquire: the kernel has finished reading every SQE before the head it published.
        uint head = Volatile.Read(ref *_sqHead);
        if (_sqeTail - head >= SqEntries)
        {
            return null;
        }

        Sqe* sqe = &_sqes[_sqeTail++ & _sqMask];
        sqe->UserData = 0; // the slot's last request left its own; the preparers keep whatever is here
        return sqe;
    }

    /// <summary>Like <see cref="GetSqe"/>, but submits what is queued to make room when the SQ is full.</summary>
    public Sqe* GetSqeSubmitIfFull()
    {
        Sqe* sqe = GetSqe();
        if (sqe == null)
        {
            ThrowOnError(Submit());
            sqe = GetSqe();
            if (sqe == null)
            {
                throw new IoUringException("Getting an SQE after submitting a full queue", Errno.EBUSY);
            }
        }

        return sqe;
    }

    /// <summary>
    /// Publishes queued SQEs and enters the kernel if anything needs it (SQEs to submit, deferred
    /// task work, or overflowed completions to flush). Never blocks.
    /// </summary>
    /// <returns>SQEs submitted, or a negated errno (-EINTR, -EAGAIN, -EBUSY are transient).</returns>
    public int Submit() => SubmitAndWait(0);

    /// <summary>Submits, then blocks until at least <paramref name="minComplete"/> CQEs are ready.</summary>
    public int SubmitAndWait(uint minComplete)
    {
        uint toSubmit = FlushSq();
        uint flags = _enterFlags;
        if (minComplete > 0 || NeedsGetEvents())
        {
            flags |= Enter.GetEvents;
        }
        else if (toSubmit == 0)
        {
            return 0;
        }

        return Counted(IoUringSyscalls.Enter(_enterFd, toSubmit, minComplete, flags, null, 0));
    }

    /// <summary>
    /// Submits, then waits up to <paramref name="timeout"/> for <paramref name="minComplete"/> CQEs,
    /// using IORING_ENTER_EXT_ARG (no timeout SQE, so nothing to cancel afterwards).
    /// </summary>
    /// <returns>SQEs submitted, -ETIME when the wait timed out with nothing submitted, or another negated errno.</returns>
    public int SubmitAndWait(uint minComplete, TimeSpan timeout)
    {
        uint toSubmit = FlushSq();
        KernelTimespec ts = KernelTimespec.FromTimeSpan(timeout);
        GetEventsArg arg = default;
        arg.Ts = (ulong)&ts;
        uint flags = _enterFlags | Enter.GetEvents | Enter.ExtArg;
        return Counted(IoUringSyscalls.Enter(_enterFd, toSubmit, minComplete, flags, &arg, (nuint)sizeof(GetEventsArg)));
    }

    /// <summary>
    /// Whether an io_uring BPF loop program attached to the ring also queues SQEs (moving the SQ
    /// tail inside io_uring_enter): then every enter takes the tail back (<see cref="ResyncSqTail"/>),
    /// also the enter <see cref="GetSqeSubmitIfFull"/> makes on its own. Owning thread only.
    /// </summary>
    public bool SqTailSharedWithLoop { get; set; }

    private int Counted(int enterResult)
    {
        if (SqTailSharedWithLoop)
        {
            ResyncSqTail(); // before anything else hands out an SQE: the program may have queued some
        }

        EnterCalls++;
        if (enterResult > 0)
        {
            Submitted += enterResult;
        }

        return enterResult;
    }

    /// <summary>Reads the next CQE without consuming it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryPeekCqe(out Cqe cqe)
    {
        uint head = *_cqHead; // ours: plain load.
        // Acquire: the CQE contents the kernel wrote before publishing this tail are visible.
        if (head == Volatile.Read(ref *_cqTail))
        {
            cqe = default;
            return false;
        }

        cqe = _cqes[head & _cqMask];
        return true;
    }

    /// <summary>Marks <paramref name="count"/> CQEs consumed, giving their slots back to the kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void CqAdvance(uint count)
    {
        // Release: our reads of those CQEs complete before the kernel may overwrite the slots.
        Volatile.Write(ref *_cqHead, *_cqHead + count);
    }

    /// <summary>
    /// Copies up to <c>destination.Length</c> ready CQEs out and consumes them with one head store.
    /// Copying (16 bytes each) lets handlers submit and re-enter the kernel freely while
    /// dispatching the batch.
    /// </summary>
    public int CopyCompletions(Span<Cqe> destination)
    {
        uint head = *_cqHead;
        uint ready = Volatile.Read(ref *_cqTail) - head; // acquire, as in TryPeekCqe.
        int count = (int)Math.Min(ready, (uint)destination.Length);
        for (int i = 0; i < count; i++)
        {
            destination[i] = _cqes[(head + (uint)i) & _cqMask];
        }

        if (count > 0)
        {
            Volatile.Write(ref *_cqHead, head + (uint)count); // release, as in CqAdvance.
        }

        return count;
    }

    /// <summary>Reads the kernel's probe of supported opcodes.</summary>
    public IoUringProbe Probe()
    {
        const int MaxOps = 256;
        int size = sizeof(ProbeHeader) + (MaxOps * sizeof(ProbeOp));
        byte* buffer = stackalloc byte[size];
        new Span<byte>(buffer, size).Clear();
        ThrowOnError(IoUringSyscalls.Register(Fd, IoUringConstants.Register.RegisterProbe, buffer, MaxOps), "IORING_REGISTER_PROBE");

        ProbeHeader* header = (ProbeHeader*)buffer;
        ProbeOp* ops = (ProbeOp*)(buffer + sizeof(ProbeHeader));
        var supported = new bool[header->OpsLen];
        for (int i = 0; i < header->OpsLen; i++)
        {
            supported[ops[i].Op] = (ops[i].Flags & OpSupported) != 0;
        }

        return new IoUringProbe(header->LastOp, supported, Features);
    }

    /// <summary>
    /// Registers the ring fd with the calling thread's io_uring context (IORING_REGISTER_RING_FDS,
    /// 5.18), so each io_uring_enter skips the fd table lookup and reference count. The index is
    /// per thread: only the calling thread may enter with it, and it is released in
    /// <see cref="Dispose"/> when that runs on the same thread (otherwise at the thread's exit).
    /// </summary>
    public bool RegisterRingFd()
    {
        if (IsRingFdRegistered)
        {
            return true;
        }

        RsrcUpdate update = default;
        update.Offset = uint.MaxValue; // -1: let the kernel pick a free slot.
        update.Data = (ulong)Fd;
        int result = IoUringSyscalls.Register(Fd, IoUringConstants.Register.RegisterRingFds, &update, 1);
        if (result != 1)
        {
            return false;
        }

        _enterFd = (int)update.Offset;
        _enterFlags |= Enter.RegisteredRing;
        _registeredOnThread = Environment.CurrentManagedThreadId;
        return true;
    }

    /// <summary>Enables a ring created with <see cref="RingOptions.StartDisabled"/>; the calling thread becomes its single issuer.</summary>
    public void EnableRings()
        => ThrowOnError(IoUringSyscalls.Register(Fd, IoUringConstants.Register.EnableRings, null, 0), "IORING_REGISTER_ENABLE_RINGS");

    /// <summary>
    /// Registers <paramref name="size"/> bytes at <paramref name="address"/> as the ring's memory
    /// region (IORING_REGISTER_MEM_REGION, 6.13, with IORING_MEM_REGION_TYPE_USER): the kernel pins
    /// the pages and maps them for itself, so an io_uring BPF loop program reaches them as region
    /// IOU_REGION_MEM while user space keeps using them as ordinary memory. Both must be
    /// page-aligned; a ring has at most one region (EBUSY after), freed with the ring. The memory
    /// must stay mapped for the ring's life.
    /// </summary>
    public void RegisterMemoryRegion(void* address, ulong size)
    {
        RegionDesc region = default;
        region.UserAddr = (ulong)address;
        region.Size = size;
        region.Flags = IoUringConstants.MemRegionTypeUser;
        MemRegionReg reg = default;
        reg.RegionUptr = (ulong)&region;
        ThrowOnError(IoUringSyscalls.Register(Fd, IoUringConstants.Register.RegisterMemRegion, &reg, 1), "IORING_REGISTER_MEM_REGION");
    }

    /// <summary>
    /// Takes the SQ tail in shared memory as ours. Normally only this class writes the tail (from
    /// <see cref="GetSqe"/>'s count, on each flush); an io_uring BPF loop program attached to the
    /// ring may also queue SQEs and move the tail while it runs inside io_uring_enter. Call this
    /// after such an enter, before the next <see cref="GetSqe"/>, or the next flush would move the
    /// tail back over the program's entries.
    /// </summary>
    public void ResyncSqTail()
    {
        // No ordering to pair with: the kernel never writes the SQ tail, and the program wrote it on
        // this thread inside the io_uring_enter that just returned. Volatile only keeps the
        // compiler from reusing an earlier read.
        _sqeTail = Volatile.Read(ref *_sqTail);
    }

    /// <summary>io_uring_register(2) on this ring; returns the kernel's result (negated errno on failure).</summary>
    public int Register(uint opcode, void* arg, uint argCount) => IoUringSyscalls.Register(Fd, opcode, arg, argCount);

    public static void ThrowOnError(int result, string? operation = null)
    {
        if (result < 0)
        {
            throw new IoUringException(operation ?? "io_uring_enter", -result);
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (IsRingFdRegistered && _registeredOnThread == Environment.CurrentManagedThreadId)
        {
            RsrcUpdate update = default;
            update.Offset = (uint)_enterFd;
            _ = IoUringSyscalls.Register(Fd, IoUringConstants.Register.UnregisterRingFds, &update, 1);
        }

        UnmapAll();
        Libc.Close(Fd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint FlushSq()
    {
        // Release: the SQE contents written since the last flush are visible before the new tail.
        Volatile.Write(ref *_sqTail, _sqeTail);
        // Everything between the kernel's head and our tail is still to be consumed, including
        // SQEs a previous enter left behind (liburing's __io_uring_flush_sq does the same).
        return _sqeTail - Volatile.Read(ref *_sqHead);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool NeedsGetEvents()
    {
        if ((SetupFlags & Setup.TaskRunFlag) != 0)
        {
            // The kernel sets IORING_SQ_TASKRUN when completion work waits for us, and
            // IORING_SQ_CQ_OVERFLOW when CQEs wait for room; otherwise an enter would find nothing.
            return (Volatile.Read(ref *_sqFlags) & (SqRingFlags.TaskRun | SqRingFlags.CqOverflow)) != 0;
        }

        // Without the flag we cannot tell: a DEFER_TASKRUN ring must enter to see completions.
        return DeferTaskRun || CqOverflowPending;
    }

    private static void* Map(int fd, nuint size, long offset)
    {
        void* ptr = Libc.Mmap(null, size, Libc.ProtRead | Libc.ProtWrite, Libc.MapShared | Libc.MapPopulate, fd, offset);
        if (ptr == Libc.MapFailed)
        {
            throw new IoUringException("mmap of the io_uring rings", Libc.LastErrno);
        }

        return ptr;
    }

    private void UnmapAll()
    {
        if (_sqesPtr != null)
        {
            Libc.Munmap(_sqesPtr, _sqesSize);
        }

        if (_cqRingPtr != null && _cqRingPtr != _sqRingPtr)
        {
            Libc.Munmap(_cqRingPtr, _cqRingSize);
        }

        if (_sqRingPtr != null)
        {
            Libc.Munmap(_sqRingPtr, _sqRingSize);
        }
    }
}
