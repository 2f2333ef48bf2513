using System;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading;
using IoUring.Bpf;

namespace IoUring.Transport.Internal;

/// <summary>
/// One ring's event loop in the kernel: bpf/event_loop.bpf.c attached to the ring as its struct
/// io_uring_bpf_ops, and the memory the program and the ring thread share (registered as
/// the ring's memory region, IORING_REGISTER_MEM_REGION). Once attached, each io_uring_enter of
/// the ring thread runs the program, which submits what the ring thread queued and, when the ring
/// thread asked it to wait (<see cref="PrepareEnter"/>), sleeps in the kernel until a completion
/// user space needs now is ready, holding in the CQ the completions that can wait (a send that
/// completed in full and whose connection has nothing more to send, <see cref="ExpectSend"/>; a
/// cancel's result) until then or until <see cref="HoldMax"/> are ready; it also arms the first
/// receive of each connection an armable accept produced, with the tags user space published
/// (<see cref="KernelArmedReceives"/>; docs/design.md, "The kernel event loop").
/// </summary>
/// <remarks>
/// Created, used and disposed on the ring thread only, like the ring. The shared memory is written
/// by the ring thread between its enters and by the program during them, on the same thread: plain
/// loads and stores are ordered by the system call itself on both sides.
/// </remarks>
internal sealed unsafe class RingKernelLoop : IDisposable
{
    public const string ResourceName = "IoUring.Transport.Bpf.event_loop.bpf.o";
    public const string Section = "struct_ops.s/loop_step";

    /// <summary>EVENT_LOOP_MEM_SIZE (bpf/iou_loop.h): the shared state's page, then the send table.</summary>
    private const int MemSize = 20480;

    /// <summary>EVENT_LOOP_SEND_TABLE: where the send table starts in the shared memory.</summary>
    private const int SendTableOffset = 4096;

    /// <summary>EVENT_LOOP_SEND_SLOTS: the slots the send table covers; sends of later slots are never held.</summary>
    public const int SendSlots = 4096;

    /// <summary>EVENT_LOOP_CQ_REGION_SIZE: the bytes of the ring's SQ/CQ region the program reads.</summary>
    private const int CqRegionSize = 69632;

    /// <summary>EVENT_LOOP_HEADER_SIZE: the first page of that region, with the SQ and CQ heads and tails; all the program reads of a smaller ring.</summary>
    private const int HeaderSize = 4096;

    /// <summary>EVENT_LOOP_CQ_ENTRIES: the CQ entries a ring needs for its region to be that big, and so for completions to be held.</summary>
    public const int CqEntries = 4096;

    /// <summary>EVENT_LOOP_SQ_REGION_SIZE: the bytes of the SQE array the program writes; a ring with fewer SQEs arms no receives.</summary>
    private const int SqRegionSize = 32768;

    /// <summary>EVENT_LOOP_ARM_SLOTS: the tags user space can publish at once for receives the program arms.</summary>
    public const int ArmSlots = 16;

    /// <summary>EVENT_LOOP_PLACE_RINGS: the most rings placement chooses among.</summary>
    public const int PlaceRings = 64;

    /// <summary>EVENT_LOOP_PLACE_LISTENERS: placeable listeners a ring can name (by their accept's slot modulo this).</summary>
    public const int PlaceListeners = 16;

    /// <summary>EVENT_LOOP_LOADS: where the rings' loads are in the shared page.</summary>
    private const int LoadsOffset = 2048;

    /// <summary>EVENT_LOOP_LOAD_GONE: the load of a ring that stopped or failed.</summary>
    public const uint LoadGone = uint.MaxValue;

    /// <summary>EVENT_LOOP_HOLD_LIMIT: the most <see cref="HoldMax"/> the program accepts.</summary>
    public const int HoldLimit = 64;

    /// <summary>
    /// The default <see cref="HoldMax"/>: a waiting enter returns once 32 completions are ready,
    /// even if all of them could wait, so a return carries at most that many held ones and they
    /// wait no longer than 32 later completions. Each held send keeps its output blocks out of the
    /// pool until then (at most 31 sends per ring).
    /// </summary>
    public const int DefaultHoldMax = 32;

    private static readonly Lazy<BpfElfObject> s_object = new(() => DispatchProgram.ReadEmbedded(ResourceName));

    private readonly Ring _ring;
    private readonly nuint _pageSize;   // the system's page: the shared memory's alignment
    private readonly nuint _size;       // the shared memory's size, whole pages
    private void* _page;                // the shared memory (struct event_loop_shared first)
    private IoUringBpfLoopAttachment? _attachment;
    private bool _canHold;              // the ring's CQ fills the region the program reads the CQEs through (set at attach)
    private bool _pageKept;             // RingPlacement frees the page (other rings write loads into it): Dispose leaves it

    /// <summary>struct event_loop_shared (bpf/iou_loop.h); who writes each field is said there.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Shared
    {
        public uint SqHead;
        public uint SqTail;
        public uint CqHead;
        public uint CqTail;
        public uint Wait;
        public uint Pass;
        public int Error;
        public uint HoldMax;
        public ulong Steps;
        public ulong Submitted;
        public ulong Sleeps;
        public ulong Deferred;
        public uint Cqes;
        public uint CqMask;
        public uint Scanned;
        public uint Reserved;
        public uint SqMask;
        public uint SqEntries;
        public uint ArmGroup;
        public uint ArmScanned;
        public uint ArmTail;
        public uint ArmHead;
        public ulong Armed;
        public fixed ulong ArmTags[ArmSlots];
        public fixed int ArmFd[ArmSlots];
        public uint PlaceRingCount; // place_rings
        public uint PlaceSelf;
        public uint PlaceMargin;
        public uint PlaceReserved;
        public ulong Placed;
        public fixed ulong PlaceTags[PlaceListeners];
        public fixed uint PlaceLids[PlaceListeners];
        public fixed int PlaceFds[PlaceRings];
    }

    private RingKernelLoop(Ring ring)
    {
        _ring = ring;
        // Page-aligned and a whole number of pages, as IORING_REGISTER_MEM_REGION requires.
        _pageSize = (nuint)Environment.SystemPageSize;
        _size = ((nuint)MemSize + _pageSize - 1) / _pageSize * _pageSize;
    }

    private Shared* State => (Shared*)_page;

    /// <summary>loop_step calls since the attach (the program counts them).</summary>
    public ulong Steps => State->Steps;

    /// <summary>SQEs the program submitted.</summary>
    public ulong Submitted => State->Submitted;

    /// <summary>Times the program asked the kernel to sleep until a completion.</summary>
    public ulong Sleeps => State->Sleeps;

    /// <summary>Completions the program held in the CQ over a sleep instead of returning for them.</summary>
    public ulong Deferred => State->Deferred;

    /// <summary><see cref="Deferred"/> read from another thread while the program may be running (tests).</summary>
    public ulong DeferredNow => Volatile.Read(ref State->Deferred);

    /// <summary>
    /// Whether the ring thread is in a waiting enter and the program is past its first two passes
    /// (pass counts the steps of this enter, zeroed at every STOP; wait is the ring thread's, set
    /// before the enter and cleared after it): it sleeps in the kernel, or is about to, with
    /// nothing ready. Read from another thread while the program may be running (tests): a post
    /// seen as made then is woken by the eventfd, and its wake ends this very enter.
    /// </summary>
    public bool AsleepNow => Volatile.Read(ref State->Wait) != 0 && Volatile.Read(ref State->Pass) >= 2;

    /// <summary>Receives the program armed for accepted connections.</summary>
    public ulong Armed => State->Armed;

    /// <summary><see cref="Armed"/> read from another thread while the program may be running (tests).</summary>
    public ulong ArmedNow => Volatile.Read(ref State->Armed);

    /// <summary>
    /// Whether the program can arm receives on this ring: it asks for the first 512 entries of the
    /// SQE array (a constant, the verifier's rule), so a ring with fewer gets none, and it reads the
    /// accepts' CQEs through the region holding needs (a ring with fewer than CqEntries reads none).
    /// </summary>
    public bool CanArmReceives => _canHold && _ring.SqEntries * 64 >= SqRegionSize;

    /// <summary>One past the last tag the program used (its arm_head; read between enters).</summary>
    public uint ArmHead => State->ArmHead;

    /// <summary>One past the last tag published (arm_tail; written between enters only).</summary>
    public uint ArmTail
    {
        get => State->ArmTail;
        set => State->ArmTail = value;
    }

    /// <summary>Publishes the <c>user_data</c> of the receive the program may arm at <paramref name="position"/> (between enters).</summary>
    public void PublishArmTag(uint position, ulong tag) => State->ArmTags[position % ArmSlots] = tag;

    /// <summary>The descriptor the program armed the receive at <paramref name="position"/> for (positions before <see cref="ArmHead"/>).</summary>
    public int ArmedFd(uint position) => State->ArmFd[position % ArmSlots];

    /// <summary>Connections the program handed to other rings (read between enters).</summary>
    public ulong Placed => State->Placed;

    /// <summary><see cref="Placed"/> read from another thread while the program may be running (tests).</summary>
    public ulong PlacedNow => Volatile.Read(ref State->Placed);

    /// <summary>
    /// The rings' loads in this ring's page (EVENT_LOOP_LOADS; <see cref="PlaceRings"/> entries), which
    /// every ring thread of the group stores into (<see cref="RingPlacement"/>). Valid until
    /// <see cref="RingPlacement"/> frees the page (<see cref="KeepPage"/>).
    /// </summary>
    public uint* Loads => (uint*)((byte*)_page + LoadsOffset);

    /// <summary>Whether the program can place connections: it reads the CQEs and writes SQEs as for arming.</summary>
    public bool CanPlace => CanArmReceives;

    /// <summary>
    /// Other ring threads will store loads into the page: <see cref="Dispose"/> leaves it, and the
    /// group frees it with <see cref="FreeKeptPage"/> once no ring runs (any thread, before the rings
    /// start placing).
    /// </summary>
    public void KeepPage() => _pageKept = true;

    /// <summary>Frees a page <see cref="KeepPage"/> kept (the group, once every ring ended).</summary>
    public static void FreeKeptPage(uint* loads) => NativeMemory.AlignedFree((byte*)loads - LoadsOffset);

    /// <summary>
    /// This ring's place in the group (ring thread, between enters, before any placeable listener
    /// starts): its index, the rings' descriptors (each the MSG_RING's target) and the margin.
    /// </summary>
    public void PublishPlacement(int self, ReadOnlySpan<int> ringFds, uint margin)
    {
        Debug.Assert(ringFds.Length is > 1 and <= PlaceRings, "the program places among 2 to PlaceRings rings");
        Shared* shared = State;
        for (int i = 0; i < ringFds.Length; i++)
        {
            shared->PlaceFds[i] = ringFds[i];
        }

        shared->PlaceSelf = (uint)self;
        shared->PlaceMargin = margin;
        shared->PlaceRingCount = (uint)ringFds.Length; // last: the program places only once it is set (same thread, program order)
    }

    /// <summary>The placement margin (ring thread, between enters; tests change it).</summary>
    public uint PlaceMargin
    {
        get => State->PlaceMargin;
        set => State->PlaceMargin = value;
    }

    /// <summary>
    /// Names a placeable listener for the program (ring thread, between enters): its accept's
    /// <c>user_data</c> and its group-wide id. False when its entry is taken by another listener of
    /// this ring (the listener then keeps its connections).
    /// </summary>
    public bool PublishPlaceableListener(ulong acceptTag, int listenerId)
    {
        int entry = (int)((uint)acceptTag % PlaceListeners);
        Shared* shared = State;
        if (shared->PlaceTags[entry] != 0)
        {
            return false;
        }

        shared->PlaceLids[entry] = (uint)listenerId;
        shared->PlaceTags[entry] = acceptTag; // after the id: the program reads the id of a tag that matches
        return true;
    }

    /// <summary>Withdraws a listener <see cref="PublishPlaceableListener"/> named (ring thread, between enters).</summary>
    public void WithdrawPlaceableListener(ulong acceptTag)
    {
        int entry = (int)((uint)acceptTag % PlaceListeners);
        Shared* shared = State;
        if (shared->PlaceTags[entry] == acceptTag)
        {
            shared->PlaceTags[entry] = 0;
            shared->PlaceLids[entry] = 0;
        }
    }

    /// <summary>Whether the program holds completions that can wait (<see cref="HoldMax"/> above 1).</summary>
    public bool Holds => State->HoldMax > 1;

    /// <summary>
    /// A waiting enter returns once this many completions are ready, held or not; 0 or 1 hold
    /// nothing, and so does a ring with fewer than <see cref="CqEntries"/> CQ entries, whatever is
    /// set (set before the first enter; tests and measurements change it).
    /// </summary>
    public int HoldMax
    {
        get => (int)State->HoldMax;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, HoldLimit);
            State->HoldMax = _canHold ? (uint)value : 0;
        }
    }

    /// <summary>
    /// Before a send of kind <see cref="OpKind.SendDeferrable"/> from <paramref name="slot"/> is
    /// submitted: the bytes its completion must report for the connection's send to be complete,
    /// or 0 when its completion must not be held (any more). Sends of slots past
    /// <see cref="SendSlots"/> are never of that kind.
    /// </summary>
    public void ExpectSend(int slot, uint bytes)
    {
        Debug.Assert((uint)slot < SendSlots, "the send table covers the first SendSlots slots only");
        ((uint*)((byte*)_page + SendTableOffset))[slot] = bytes;
    }

    /// <summary>
    /// Attaches the program to <paramref name="ring"/> (the ring thread, before its first enter).
    /// The shared page is registered as the ring's memory region only once the program is attached,
    /// so a refusal leaves the ring as it was, usable by the user-space loop.
    /// </summary>
    /// <param name="ring">The ring, created on this thread.</param>
    /// <param name="bufferGroup">The ring's provided buffer group, which the receives the program arms select from.</param>
    /// <exception cref="BpfException">The kernel lacks the loop, the process lacks the privilege, or the kernel refused the program (its verifier log attached).</exception>
    public static RingKernelLoop Attach(Ring ring, ushort bufferGroup)
    {
        if (!IoUringTransportFactory.IsIoUringBpfLoopAvailable)
        {
            // Read once per process from the kernel's BTF: the same answer for every ring.
            throw BpfException.Unsupported($"This kernel has no io_uring BPF event loop (struct {IoUringBpfLoop.OpsType} and its kfuncs, Linux 7.1) in its BTF.");
        }

        if (!ring.DeferTaskRun)
        {
            throw BpfException.Unsupported("The ring has no IORING_SETUP_DEFER_TASKRUN (its kernel is older than 6.1), which the io_uring BPF loop requires.");
        }

        if (ring.CqesOffset > HeaderSize)
        {
            throw BpfException.Unsupported($"The ring's headers end at byte {ring.CqesOffset}, past the {HeaderSize} bytes the event loop program reads.");
        }

        var loop = new RingKernelLoop(ring);
        try
        {
            loop._page = NativeMemory.AlignedAlloc(loop._size, loop._pageSize);
            new Span<byte>(loop._page, (int)loop._size).Clear();
            Shared* shared = loop.State;
            shared->SqHead = ring.SqHeadOffset;
            shared->SqTail = ring.SqTailOffset;
            shared->CqHead = ring.CqHeadOffset;
            shared->CqTail = ring.CqTailOffset;
            shared->Cqes = ring.CqesOffset;
            shared->CqMask = ring.CqEntries - 1; // a power of two (io_uring_setup(2) rounds up)
            // The program reads the CQEs through the first CqRegionSize bytes of the ring's SQ/CQ
            // region, a constant (the verifier's rule), which a ring with CqEntries entries fills;
            // on a smaller ring it reads only the headers and cannot hold (bpf/iou_loop.h).
            loop._canHold = ring.CqEntries >= CqEntries && ring.CqesOffset <= CqRegionSize - CqEntries * 16;
            shared->HoldMax = loop._canHold ? DefaultHoldMax : 0u;
            shared->SqMask = ring.SqMask;
            shared->SqEntries = ring.SqEntries;
            shared->ArmGroup = bufferGroup;
            // The program writes SQEs at the SQ tail: every enter takes the tail back (Ring.ResyncSqTail).
            ring.SqTailSharedWithLoop = true;
            loop._attachment = IoUringBpfLoop.Attach(ring.Fd, s_object.Value, Section);
            // After the attach and before any enter: the program reads the region on its first pass.
            ring.RegisterMemoryRegion(loop._page, loop._size);
            return loop;
        }
        catch
        {
            loop._attachment?.Dispose();
            loop._attachment = null;
            if (loop._page is not null)
            {
                NativeMemory.AlignedFree(loop._page); // not registered: the registration is the last step
                loop._page = null;
            }

            throw;
        }
    }

    /// <summary>The kernel-wide ids of the program, its map and its link (bpftool), for tests.</summary>
    public (uint Program, uint Map, uint Link) Ids => _attachment is { } a ? (a.ProgramId, a.MapId, a.LinkId) : default;

    /// <summary>
    /// Before an io_uring_enter of the ring thread: the program's first pass lets the kernel run
    /// the ring's task work once; then it stops, or with <paramref name="wait"/> sleeps until a
    /// completion is ready (the user-space loop's min_complete of 1). Zeroing the pass count
    /// covers an enter a signal cut short (the program zeroes it at every STOP).
    /// </summary>
    public void PrepareEnter(bool wait)
    {
        Shared* shared = State;
        shared->Wait = wait ? 1u : 0u;
        shared->Pass = 0;
    }

    /// <summary>
    /// After a waiting enter: enters the binding makes on its own (a full SQ in
    /// <see cref="Ring.GetSqeSubmitIfFull"/>) must only submit and reap, never sleep.
    /// </summary>
    public void EndWait() => State->Wait = 0;

    /// <summary>
    /// Raises what the program's last submit failed with, if anything: -EAGAIN and -EBUSY (the
    /// kernel short of memory, or overflowed completions to flush first) are transient and the
    /// next enter retries, as the user-space loop does with io_uring_enter's result.
    /// </summary>
    public void ThrowIfSubmitFailed()
    {
        int error = State->Error;
        if (error == 0)
        {
            return;
        }

        State->Error = 0;
        if (error != -Interop.Errno.EAGAIN && error != -Interop.Errno.EBUSY)
        {
            throw new IoUringException("bpf_io_uring_submit_sqes in the kernel event loop", -error);
        }
    }

    /// <summary>
    /// Detaches the program and frees the shared page. Call after the ring is disposed: the ring's
    /// memory region pins the page until the ring is freed, and closing the ring detaches the loop
    /// first (the link then only has to be closed).
    /// </summary>
    public void Dispose()
    {
        _attachment?.Dispose();
        _attachment = null;
        if (_page is not null && !_pageKept)
        {
            NativeMemory.AlignedFree(_page);
        }

        _page = null;
    }
}
