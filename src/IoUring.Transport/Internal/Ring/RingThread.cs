using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Bpf;
using IoUring.Interop;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// One ring and the dedicated thread that alone submits to it. Other threads hand it work through
/// <see cref="Post"/>; the thread sleeps in io_uring_enter and is woken by <see cref="RingWaker"/>.
/// The loop routes and knows no concrete handler: completions go to the owner of the slot their
/// <c>user_data</c> names (<see cref="RingSlots"/>), posted work to its <see cref="IRingWork"/>,
/// provided buffers are counted by <see cref="ReceiveBuffers"/>. One turn is <see cref="Turn"/>;
/// docs/design.md describes it and the threading model.
/// </summary>
[SuppressMessage("Design", "CA1001", Justification = "The ring thread disposes what it owns when its loop ends (Cleanup); nothing else may.")]
internal sealed unsafe partial class RingThread
{
    private const int CompletionBatch = 256;

    // Slots kept reserved for connections whose first receive the kernel event loop arms: enough
    // for a burst of accepts between two turns; more connections than that are armed by the ring
    // thread as without the loop. (At most RingKernelLoop.ArmSlots.)
    private const int KernelArmReserve = 8;

    // How long the ring waits on the CPU for the responses to data it just delivered before it
    // sleeps in io_uring_enter (see AwaitWorkBriefly).
    private static readonly long s_awaitWorkTicks = Stopwatch.Frequency / 50_000; // 20 µs

    private readonly ConcurrentQueue<(IRingWork Work, int Operation)> _queue = new();
    private readonly IoUringTransportOptions _options;
    private readonly ILogger _logger;
    private readonly Thread _thread;
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly RingSlots _slots = new(); // ring thread only

    private Ring? _ring;
    private ReceiveBuffers? _buffers;
    private RingWaker? _waker;
    private RingKernelLoop? _kernelLoop; // the ring's event loop in the kernel, if attached (ring thread only)
    private KernelArmedReceives? _armedReceives; // the slots reserved for receives the kernel loop arms (ring thread only)
    private long _kernelArmed;           // receives the kernel loop armed, copied after each enter
    private long _kernelPlaced;          // connections the kernel loop handed to other rings, copied after each enter
    private RingPlacement? _placement;   // the group's placement, once set up on this ring (ring thread only)
    private bool _placementGone;         // this ring published LoadGone (stopping or failed): it publishes no load again
    private bool _enteredToEnd;          // stopping with nothing left, it entered once more for hand-overs in flight
    private long _kernelSubmitted;       // the kernel loop's counters, copied after each enter (ring thread writes,
    private long _kernelSteps;           // any thread reads: the program's page is freed with the ring)
    private long _kernelSleeps;
    private long _kernelDeferred;
    private volatile bool _stopping;   // set by Stop; the loop ends once no slot is in use.
    private long _activeConnections;   // ring thread writes; see ActiveConnections.
    private bool _dataDelivered;       // data went to an application since the ring last slept (ring thread only).
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

    /// <summary>The provided receive buffers (ring thread only, but for the counts).</summary>
    public ReceiveBuffers Buffers => _buffers!;

    /// <summary>Fault injection for tests (<see cref="IoUringTransportOptions.TestHooks"/>); null in use.</summary>
    public TransportTestHooks? Hooks => _options.TestHooks;

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
            if (_placement is not null && !_placementGone)
            {
                _placement.PublishLoad(Index, value); // the kernel event loops of the group place by it
            }
        }
    }

    /// <summary>This ring's entry in the LeastConnections load map; null in other modes (set before any listener starts).</summary>
    public RingLoadSlot? Load { get; set; }

    public long ConnectionsAccepted { get; set; }

    /// <summary>Connections this ring connected for <see cref="IoUringConnectionFactory"/>.</summary>
    public long ConnectionsConnected { get; set; }

    public long BytesReceived { get; set; }

    public long BytesSent { get; set; }

    public long Enters => _ring?.EnterCalls ?? 0;

    /// <summary>SQEs submitted: by io_uring_enter, or by the kernel event loop's program.</summary>
    public long Submissions => (_ring?.Submitted ?? 0) + Volatile.Read(ref _kernelSubmitted);

    /// <summary>The kernel event loop's loop_step calls so far (0 without it).</summary>
    public long KernelEventLoopSteps => Volatile.Read(ref _kernelSteps);

    /// <summary>The times the kernel event loop slept until a completion (0 without it).</summary>
    public long KernelEventLoopSleeps => Volatile.Read(ref _kernelSleeps);

    /// <summary>Completions the kernel event loop held in the kernel for a later return (0 without it).</summary>
    public long KernelEventLoopDeferred => Volatile.Read(ref _kernelDeferred);

    /// <summary>
    /// The kernel event loop's held completions as its program counts them right now, also while
    /// the ring thread sleeps in the kernel (<see cref="KernelEventLoopDeferred"/> is copied after
    /// each enter). For tests, and only while the ring runs: the program's memory goes with the ring.
    /// </summary>
    internal long KernelEventLoopDeferredNow => _kernelLoop is { } loop && IsRunning ? (long)loop.DeferredNow : 0;

    /// <summary>The ring thread's id in the kernel (gettid(2); its /proc/self/task entry), set when the thread starts.</summary>
    internal int OsThreadId { get; private set; }

    /// <summary>
    /// Whether the ring thread sleeps in the kernel event loop right now (RingKernelLoop.AsleepNow;
    /// false without it). For tests, and only while the ring runs.
    /// </summary>
    internal bool KernelEventLoopAsleepNow => _kernelLoop is { } loop && IsRunning && loop.AsleepNow;

    /// <summary>Receives the kernel event loop armed for accepted connections (0 without it), copied after each enter.</summary>
    public long KernelEventLoopArmed => Volatile.Read(ref _kernelArmed);

    /// <summary>
    /// <see cref="KernelEventLoopArmed"/> as the program counts it right now, also while the ring
    /// thread sleeps in the kernel. For tests, and only while the ring runs.
    /// </summary>
    internal long KernelEventLoopArmedNow => _kernelLoop is { } loop && IsRunning ? (long)loop.ArmedNow : 0;

    /// <summary>Connections the kernel event loop handed to less loaded rings (0 without placement), copied after each enter.</summary>
    public long KernelEventLoopPlaced => Volatile.Read(ref _kernelPlaced);

    /// <summary><see cref="KernelEventLoopPlaced"/> as the program counts it right now. For tests, and only while the ring runs.</summary>
    internal long KernelEventLoopPlacedNow => _kernelLoop is { } loop && IsRunning ? (long)loop.PlacedNow : 0;

    /// <summary>Whether this ring's kernel event loop can place connections (set before the loop starts).</summary>
    public bool CanPlace => _kernelLoop is { CanPlace: true } && _armedReceives is not null;

    /// <summary>Whether placement is set up on this ring (ring thread).</summary>
    public bool Places => _placement is { Active: true };

    /// <summary>
    /// Sets placement up on this ring (ring thread, posted by <see cref="RingPlacement.TryStart"/>
    /// before any listener starts): the page stays for the group to free, the program learns its
    /// index, the rings' descriptors and the margin, and the ring keeps tags published for the
    /// receives of connections handed to it even without a listener of its own. Returns the page's
    /// loads, which every ring thread stores into.
    /// </summary>
    internal uint* EnablePlacement(RingPlacement placement, ReadOnlySpan<int> ringFds, uint margin)
    {
        Debug.Assert(IsOnRingThread, "the kernel loop's memory is the ring thread's between its enters");
        RingKernelLoop loop = _kernelLoop!;
        loop.KeepPage();
        loop.PublishPlacement(Index, ringFds, margin);
        _armedReceives!.ListenerStarted(); // withdrawn when the ring stops (Refresh)
        _placement = placement;
        return loop.Loads;
    }

    /// <summary>Changes the placement margin (ring thread; tests).</summary>
    internal void SetPlaceMargin(uint margin)
    {
        Debug.Assert(IsOnRingThread, "the kernel loop's memory is the ring thread's between its enters");
        _kernelLoop!.PlaceMargin = margin;
    }

    /// <summary>
    /// Names a placeable listener's accept to this ring's program (ring thread): false when the
    /// program's table has no room for it (the listener then keeps its connections).
    /// </summary>
    public bool PublishPlaceableListener(ulong acceptTag, int listenerId)
    {
        Debug.Assert(IsOnRingThread, "the kernel loop's memory is the ring thread's between its enters");
        return _kernelLoop!.PublishPlaceableListener(acceptTag, listenerId);
    }

    /// <summary>The placeable listener stops (ring thread): its accepts are handed over no more.</summary>
    public void WithdrawPlaceableListener(ulong acceptTag)
    {
        Debug.Assert(IsOnRingThread, "the kernel loop's memory is the ring thread's between its enters");
        _kernelLoop!.WithdrawPlaceableListener(acceptTag);
    }

    /// <summary>Whether this ring's event loop runs in the kernel (set before the loop starts).</summary>
    public bool RunsKernelEventLoop { get; private set; }

    /// <summary>
    /// Whether the ring's kernel event loop may hold the completions of sends of kind
    /// <see cref="OpKind.SendDeferrable"/> (set before the loop starts): connections then tell the
    /// ring when the application flushes while such a send is in flight (IoUringConnection.Send.cs).
    /// </summary>
    public bool HoldsSendCompletions { get; private set; }

    /// <summary>Work posted and not yet run (tests: to know that posts have arrived).</summary>
    internal int QueuedWork => _queue.Count;

    /// <summary>Why the kernel event loop was asked for and not attached (<see cref="KernelEventLoop.WhereAvailable"/>); null otherwise. Set before the loop starts.</summary>
    public BpfException? KernelEventLoopRefusal { get; private set; }

    /// <summary>The kernel-wide ids of the attached loop's program, map and link (tests check they are gone after the stop).</summary>
    public (uint Program, uint Map, uint Link) KernelEventLoopIds { get; private set; }

    public long Completions { get; private set; }

    public long BuffersInUse => _buffers?.Out ?? 0;

    public long BufferShortages => _buffers?.Shortages ?? 0;

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
        // Store, then load the waker's flag in Wake: without a full fence between them the store
        // could still sit in this core's store buffer while the ring thread announces its sleep and
        // reads _stopping as false, and we read the flag as 0: both would miss the other.
        Interlocked.MemoryBarrier();
        _waker?.Wake();
    }

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

        _waker?.Wake();
    }

    /// <summary>The ring's loop has ended; whatever is still queued will never run.</summary>
    private void RejectQueued(Exception failure)
    {
        while (_queue.TryDequeue(out var item))
        {
            item.Work.Reject(item.Operation, failure);
        }
    }

    /// <summary>Assigns a slot to <paramref name="handler"/> (ring thread).</summary>
    public RingSlot AllocateSlot(IRingCompletionHandler handler)
    {
        Debug.Assert(IsOnRingThread, "slots belong to the ring thread");
        return _slots.Allocate(handler);
    }

    /// <summary>Gives a slot in use, generation and all, to <paramref name="handler"/> (ring thread).</summary>
    public void ReplaceSlotHandler(RingSlot slot, IRingCompletionHandler handler)
    {
        Debug.Assert(IsOnRingThread, "slots belong to the ring thread");
        _slots.Replace(slot, handler);
    }

    /// <summary>
    /// Whether the kernel event loop arms the first receive of connections accepted on this ring by
    /// a listener that keeps them here (<see cref="OpKind.AcceptArmable"/>). Set before the loop starts.
    /// </summary>
    public bool ArmsReceives => _armedReceives is not null;

    /// <summary>An armable listener started on this ring (ring thread, <see cref="ArmsReceives"/>).</summary>
    public void ArmableListenerStarted() => _armedReceives!.ListenerStarted();

    /// <summary>An armable listener stopped on this ring (ring thread, <see cref="ArmsReceives"/>).</summary>
    public void ArmableListenerStopped() => _armedReceives!.ListenerStopped();

    /// <summary>
    /// An <see cref="OpKind.AcceptArmable"/> CQE with descriptor <paramref name="fd"/> and
    /// IORING_CQE_F_MORE (ring thread; each one, in CQ order): whether the kernel armed its
    /// receive, and the slot that receive's <c>user_data</c> names, which the connection takes
    /// over (<see cref="ReplaceSlotHandler"/>) or gives up (<see cref="AbandonArmedReceive"/>).
    /// </summary>
    public bool TakeArmedReceive(int fd, out RingSlot slot)
    {
        Debug.Assert(IsOnRingThread, "the kernel loop's memory is the ring thread's between its enters");
        return _armedReceives!.TryTake(fd, out slot);
    }

    /// <summary>No connection takes over <paramref name="slot"/>: cancel its armed receive; the slot is freed after its last CQE (ring thread).</summary>
    public void AbandonArmedReceive(RingSlot slot) => _armedReceives!.Abandon(slot);

    /// <summary>Gives a slot back once none of its requests can complete any more (ring thread).</summary>
    public void FreeSlot(RingSlot slot)
    {
        Debug.Assert(IsOnRingThread, "slots belong to the ring thread");
        _slots.Free(slot);
    }

    /// <summary>The application advanced past these provided buffers (any thread); they go back on the next turn.</summary>
    public void ReturnBuffers(List<int> bufferIds)
    {
        if (_buffers!.Return(bufferIds, _stopping))
        {
            _waker!.Wake();
        }
    }

    /// <summary>
    /// The next SQE with its <c>user_data</c> already naming <paramref name="slot"/> and
    /// <paramref name="kind"/>, submitting first if the queue is full (ring thread). The caller
    /// prepares it (the preparers keep <c>user_data</c>).
    /// </summary>
    public Sqe* GetSqe(OpKind kind, RingSlot slot)
    {
        Debug.Assert(IsOnRingThread, "only the ring thread may submit (IORING_SETUP_SINGLE_ISSUER)");
        Sqe* sqe = _ring!.GetSqeSubmitIfFull();
        sqe->UserData = slot.Tag(kind);
        return sqe;
    }

    private void Run()
    {
        OsThreadId = Libc.GetTid(); // before the start is signalled: whoever waited for the start reads it
        try
        {
            // SINGLE_ISSUER binds the ring to the creating thread, so it is created here. (A
            // kernel event loop holds completions only on a CQ of RingKernelLoop.CqEntries or
            // more, which the default SubmissionQueueSize gives.)
            _ring = Ring.Create(new RingOptions
            {
                SqEntries = (uint)_options.SubmissionQueueSize,
                CqEntries = (uint)_options.SubmissionQueueSize * 8,
            });
            _ring.RegisterRingFd();
            RestrictOperations(); // RingThread.Restriction.cs
            if (_options.ZeroCopySendThreshold is int threshold && _ring.Probe().IsSupported(IoUringConstants.Op.SendMsgZc))
            {
                ZeroCopySendThreshold = threshold;
            }

            _buffers = new ReceiveBuffers(BufferRing.Create(_ring, 0, _options.ReceiveBufferCount, _options.ReceiveBufferSize));
            _waker = RingWaker.Create();
            ArmWakeRead();
            AttachKernelEventLoop();
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
            var completions = new Cqe[CompletionBatch];
            while (Turn(completions))
            {
            }
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
            MarkPlacementGone(); // and the kernel event loops stop handing it connections
            FailEveryHandler(ex);
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

    /// <summary>
    /// Attaches the event loop program to the ring when the options ask for it, before the first
    /// enter. Refused where it is only wanted where available: the ring runs the user-space loop
    /// and the refusal is kept for the one warning (<see cref="KernelEventLoopRefusal"/>).
    /// </summary>
    private void AttachKernelEventLoop()
    {
        if (_options.KernelEventLoop == KernelEventLoop.Off)
        {
            return;
        }

        try
        {
            if (BpfPrivileges.MissingForStructOps() is string missing)
            {
                throw BpfException.NotPermitted($"The process lacks {missing}, which loading the io_uring BPF event loop (a struct_ops program) needs.");
            }

            _kernelLoop = RingKernelLoop.Attach(_ring!, _buffers!.GroupId);
            if (Hooks?.KernelEventLoopHoldMax is int holdMax)
            {
                _kernelLoop.HoldMax = holdMax;
            }

            int reserve = Math.Min(Hooks?.KernelEventLoopArmReserve ?? KernelArmReserve, RingKernelLoop.ArmSlots);
            if (reserve > 0 && _kernelLoop.CanArmReceives)
            {
                _armedReceives = new KernelArmedReceives(this, _kernelLoop, reserve);
            }

            RunsKernelEventLoop = true;
            HoldsSendCompletions = _kernelLoop.Holds;
            KernelEventLoopIds = _kernelLoop.Ids;
        }
        catch (BpfException ex) when (_options.KernelEventLoop == KernelEventLoop.WhereAvailable)
        {
            KernelEventLoopRefusal = ex;
        }
        catch (BpfException ex)
        {
            throw new InvalidOperationException($"KernelEventLoop is Required, and ring {Index} cannot run the io_uring BPF event loop: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// One turn of the loop: run posted work, put given-back buffers into the buffer ring, reap and
    /// route completions, re-arm receives that waited for buffers; then stop, go round again at once
    /// (something happened, so submit what it queued), wait briefly for a response, or sleep until
    /// a completion or a wake. Returns false when the ring may end.
    /// </summary>
    private bool Turn(Cqe[] completions)
    {
        if (_stopping)
        {
            MarkPlacementGone(); // no more connections handed here
        }

        bool worked = RunPostedWork() | _buffers!.DrainReturned();
        int reaped = ReapAndRoute(completions, out bool woken);
        _buffers.RearmWaiting();
        _armedReceives?.Refresh(_stopping); // after the reap: the accepts reaped freed their positions
        if (MayEnd)
        {
            if (_placement is null || _enteredToEnd)
            {
                return false;
            }

            // A connection another ring handed over before the group began to stop is task work
            // queued on this ring (io_msg_data_remote, io_uring/msg_ring.c) that only an enter
            // runs: enter once more, and take what it posts, before ending (RingPlacement).
            _enteredToEnd = true;
            SubmitQueued();
            return true;
        }

        if (reaped > 0 || ((worked || woken) && !HoldsSendCompletions))
        {
            SubmitQueued();
            return true;
        }

        if (worked || woken)
        {
            // Only posted work ran (a send, say), or a wake came: with a kernel loop that holds
            // completions, what the work queued (and the wake read, re-armed) is submitted by the
            // waiting enter itself. A completion user space needs ends that enter at once, as a
            // submit-only enter would have returned it; one that can wait (a send that completed in
            // full) is held and comes back with the next one that cannot, which saves this return
            // and the one after it. If work came meanwhile, submit and turn again.
            if (!SleepUntilWoken())
            {
                SubmitQueued();
            }

            return true;
        }

        if (_dataDelivered)
        {
            _dataDelivered = false;
            if (AwaitWorkBriefly())
            {
                return true;
            }
        }

        SleepUntilWoken();
        return true;
    }

    /// <summary>Stopping, and nothing is left: no slot in use, no buffer out.</summary>
    private bool MayEnd => _stopping && _slots.Live == 0 && _buffers!.Out == 0;

    private bool RunPostedWork()
    {
        bool any = false;
        while (_queue.TryDequeue(out var item))
        {
            any = true;
            try
            {
                item.Work.Execute(this, item.Operation);
            }
            catch (Exception ex) when (item.Work is IRingCompletionHandler owner)
            {
                owner.OnFault(ex); // work without a slot (a handover, pinning) fails the ring instead
            }
        }

        return any;
    }

    /// <summary>Reaps and routes what completed; returns how many went to owners, and whether the cross-thread wake was among them.</summary>
    private int ReapAndRoute(Cqe[] completions, out bool woken)
    {
        int count = _ring!.CopyCompletions(completions);
        Completions += count;
        int routed = count;
        woken = false;
        for (int i = 0; i < count; i++)
        {
            OpKind kind = UserData.Kind(completions[i].UserData);
            if (kind == OpKind.Wake)
            {
                ArmWakeRead();
                woken = true;
                routed--;
                continue;
            }

            if (kind is OpKind.Adopt or OpKind.Handover)
            {
                OnPlacement(kind, in completions[i]); // not a slot's: it names a listener and a descriptor
                continue;
            }

            Route(in completions[i]);
        }

        return routed;
    }

    private void Route(in Cqe cqe)
    {
        OpKind kind = UserData.Kind(cqe.UserData);

        IRingCompletionHandler? handler = _slots.Find(cqe.UserData); // null: for a slot's previous owner
        if (handler is null)
        {
            return;
        }

        try
        {
            handler.OnCompletion(this, kind, in cqe);
        }
        catch (Exception ex)
        {
            // A bug or an unexpected errno in one owner's handling costs that owner only, not the
            // ring and everything on it.
            handler.OnFault(ex);
        }
    }

    /// <summary>
    /// A connection handed to this ring by another ring's kernel event loop (<see cref="OpKind.Adopt"/>),
    /// or one this ring's loop failed to hand over (<see cref="OpKind.Handover"/>, res the error):
    /// either way this ring now owns the descriptor, and starts the connection on its listener, or
    /// closes it if the listener has unbound (ring thread; every such CQE, in CQ order).
    /// </summary>
    private void OnPlacement(OpKind kind, in Cqe cqe)
    {
        int fd = UserData.Descriptor(cqe.UserData);
        RingSlot armed = RingSlot.None;
        if (kind == OpKind.Adopt)
        {
            // Matched in CQ order with accepts, as the program arms them (KernelArmedReceives.TryTake).
            if (_armedReceives is not null && cqe.Res >= 0)
            {
                _ = _armedReceives.TryTake(cqe.Res, out armed);
            }
        }
        else
        {
            IoUringTransportLog.ConnectionHandoverFailed(_logger, Index, -cqe.Res);
        }

        IoUringConnectionListener? listener = _placement?.Find(UserData.ListenerId(cqe.UserData));
        if (listener is null)
        {
            Libc.Close(fd);
            if (armed.IsAssigned)
            {
                AbandonArmedReceive(armed); // closing the descriptor does not end its receive
            }

            return;
        }

        listener.OnAccepted(this, fd, armed);
    }

    /// <summary>This ring stops or failed: the group's kernel event loops hand it nothing more (ring thread).</summary>
    private void MarkPlacementGone()
    {
        if (_placement is not null && !_placementGone)
        {
            _placementGone = true;
            _placement.MarkGone(Index);
        }
    }

    /// <summary>Sleeps in the kernel until a completion or a wake, unless work is there already; returns whether it slept.</summary>
    private bool SleepUntilWoken()
    {
        // Announce the sleep, then look once more: a Post that missed the flag is seen here.
        _waker!.AnnounceSleep();
        if (!_queue.IsEmpty || _buffers!.HasReturns || MayEnd)
        {
            _waker.EndSleep();
            return false;
        }

        SubmitAndWait();
        _waker.EndSleep();
        return true;
    }

    /// <summary>Submits what is queued and reaps what completed, without waiting: one enter, if there is anything to do.</summary>
    private void SubmitQueued()
    {
        _kernelLoop?.PrepareEnter(wait: false);
        Submit(_ring!.Submit());
        AfterKernelLoopEnter();
    }

    /// <summary>Submits what is queued and waits for at least one completion (the wake read's, at the latest).</summary>
    private void SubmitAndWait()
    {
        // With the kernel event loop the enter's own counts are ignored (io_uring/loop.c): the
        // program submits, and it waits because it is told to.
        _kernelLoop?.PrepareEnter(wait: true);
        try
        {
            Submit(_ring!.SubmitAndWait(1));
        }
        finally
        {
            _kernelLoop?.EndWait();
        }

        AfterKernelLoopEnter();
    }

    private void AfterKernelLoopEnter()
    {
        if (_kernelLoop is { } loop)
        {
            Volatile.Write(ref _kernelSubmitted, (long)loop.Submitted);
            Volatile.Write(ref _kernelSteps, (long)loop.Steps);
            Volatile.Write(ref _kernelSleeps, (long)loop.Sleeps);
            Volatile.Write(ref _kernelDeferred, (long)loop.Deferred);
            Volatile.Write(ref _kernelArmed, (long)loop.Armed);
            Volatile.Write(ref _kernelPlaced, (long)loop.Placed);
            loop.ThrowIfSubmitFailed();
        }
    }

    /// <summary>
    /// Before a send of kind <see cref="OpKind.SendDeferrable"/> from <paramref name="slot"/>: the
    /// bytes its completion must report to be held; 0 when it must not be held (any more). Ring
    /// thread, on a ring whose loop <see cref="HoldsSendCompletions"/>; false for a slot the
    /// program's table does not cover (the send is then a plain one).
    /// </summary>
    public bool ExpectSend(RingSlot slot, uint bytes)
    {
        Debug.Assert(IsOnRingThread, "the kernel loop's memory is the ring thread's between its enters");
        if ((uint)slot.Index >= RingKernelLoop.SendSlots)
        {
            return false;
        }

        _kernelLoop!.ExpectSend(slot.Index, bytes);
        return true;
    }

    /// <summary>Notes that received data went to an application: its response is likely to follow shortly (ring thread).</summary>
    public void DataDelivered() => _dataDelivered = true;

    /// <summary>
    /// Applications usually answer data within microseconds. Waiting that long for their work on
    /// the CPU is cheaper than sleeping in io_uring_enter and being woken through the eventfd (a
    /// write by the poster, a wake-up and a context switch here). The ring yields while it waits
    /// rather than spinning: the thread-pool threads that produce the work need a CPU, and with a
    /// ring per CPU (the default) spinning rings can hold every CPU (perf/README.md, Unpinned).
    /// Returns whether work came.
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

    private static void Submit(int result)
    {
        // EINTR: a signal (the runtime uses them to suspend threads) cut the wait short; EAGAIN and
        // EBUSY: the kernel is short of memory or holds overflowed CQEs; the next turn retries.
        if (result < 0 && result != -Errno.EINTR && result != -Errno.EAGAIN && result != -Errno.EBUSY && result != -Errno.ETIME)
        {
            Ring.ThrowOnError(result);
        }
    }

    private void ArmWakeRead() => _waker!.PrepareRead(GetSqe(OpKind.Wake, new RingSlot(0, 0)));

    /// <summary>The loop failed: every owner of a slot ends without the ring (ring thread, its last moments).</summary>
    private void FailEveryHandler(Exception ex)
    {
        for (int i = 0; i < _slots.Count; i++)
        {
            try
            {
                _slots[i]?.OnRingFailed(ex);
            }
            catch (Exception)
            {
                // One handler failing again (a throwing logger, say) must not leave the others hanging.
            }
        }
    }

    private void Cleanup()
    {
        _buffers?.Dispose(); // before the ring closes; leaks them if an application still references some
        _ring?.Dispose();
        _kernelLoop?.Dispose(); // after the ring: the ring's memory region pins its page until the ring is freed
        _waker?.Dispose();   // after the ring: its pending read wrote into the waker's memory
    }
}
