using System;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading;
using System.Threading.Tasks;

namespace IoUring.Transport.Internal;

/// <summary>
/// Placement of accepted connections by load, in the kernel (bpf/event_loop.bpf.c,
/// place_connection): when a ring's kernel event loop sees a placeable listener's accept and its
/// ring has more open connections than the least loaded ring of the group by more than a margin,
/// it hands the descriptor to that ring with IORING_OP_MSG_RING, whose program arms the
/// connection's first receive there. One per ring group, when every ring runs the kernel event
/// loop and can arm receives (docs/design.md, "The kernel event loop").
/// </summary>
/// <remarks>
/// <para>
/// Shared memory. A ring's program reads only its own ring's registered memory region, so each ring
/// thread stores its open connections into every ring's page (<see cref="PublishLoad"/>:
/// <c>loads[i]</c>, bpf/iou_loop.h says who writes each field). Those stores are
/// <see cref="Volatile.Write(ref uint, uint)"/> of aligned 32-bit words: single-copy atomic, so no
/// program reads a torn load; Volatile adds no ordering the program relies on (it only keeps the JIT
/// from eliding a store nothing in this process reads back). No barrier is needed, because a load
/// is a hint: a stale one costs balance, never a connection. What a hand-over needs to be correct
/// (the target's descriptor, this ring's index, the listener ids) is written by each ring's own
/// thread between its enters, before its listeners start (<see cref="RingThread.EnablePlacement"/>),
/// so program order on that thread orders it, as for the rest of the page.
/// </para>
/// <para>
/// Pages. Other ring threads store into a ring's page for as long as they run, so no ring frees its
/// page when it ends (<see cref="RingKernelLoop.KeepPage"/>); <see cref="FreePages"/> frees them all
/// once every ring of the group has ended, and leaks them if one did not end in time.
/// </para>
/// <para>
/// Rings that end. A ring that stops or fails stores <see cref="RingKernelLoop.LoadGone"/> into
/// every page first (<see cref="MarkGone"/>), which is never the least load. A stop cannot lose a
/// connection: rings stop only when the group is disposed, after every listener has stopped, so
/// every hand-over was submitted (and its task work queued on the target, io_msg_data_remote in
/// io_uring/msg_ring.c) before; a stopping ring enters once more before it ends, which runs that
/// task work and posts the CQE (<see cref="RingThread"/>'s last turn). A ring's failure can: a
/// program that read the failing ring's load before the store of LoadGone may still hand it one
/// connection in the microseconds before the failing ring closes; that connection's descriptor
/// then stays open, unserved, until the process ends (or, if the number was reused by a descriptor
/// that is no ring, the MSG_RING fails with EBADFD and the source ring serves it). A ring fails
/// only on a bug or a broken ring; that narrow case is accepted, not handled.
/// </para>
/// <para>
/// Listener ids. The target needs the listener a connection belongs to: each placeable listener
/// gets an id (24 bits, never reused in the process, so a hand-over still in flight when its
/// listener unbinds finds no listener and closes the descriptor rather than reaching another one;
/// and a hand-over that reached a ring of another group, whose descriptor number a failed ring's
/// reused, finds none there either), which
/// the ring names to its program by the listener's accept <c>user_data</c>
/// (<see cref="RingKernelLoop.PublishPlaceableListener"/>) and the MSG_RING carries in the target's
/// <c>user_data</c> (<see cref="OpKind.Adopt"/>).
/// </para>
/// </remarks>
internal sealed unsafe class RingPlacement
{
    /// <summary>
    /// The default margin: a ring hands a connection over only when it has at least 3 more open
    /// connections than the least loaded ring. A hand-over costs a MSG_RING, task work and a wake
    /// of the target's thread; a difference of one or two connections is what any spread leaves.
    /// </summary>
    public const uint DefaultMargin = 2;

    private readonly RingThread[] _rings;
    private readonly uint*[] _loads;             // each ring's loads[] (in its kept page); set during setup
    private readonly ConcurrentDictionary<int, IoUringConnectionListener> _listeners = new();
    private static int s_lastListenerId;        // process-wide, not per group: see the remarks
    private bool _failedStart;                   // a ring ended before it set placement up: nothing is placeable

    private RingPlacement(RingThread[] rings)
    {
        _rings = rings;
        _loads = new uint*[rings.Length];
    }

    /// <summary>
    /// Sets placement up on every ring (each ring's thread writes its own page; this waits for all),
    /// or returns null where it cannot run: fewer than 2 or more than <see cref="RingKernelLoop.PlaceRings"/>
    /// rings, a ring without the kernel event loop or unable to arm receives, or turned off by a test.
    /// Called once the rings have started and before any listener starts.
    /// </summary>
    public static RingPlacement? TryStart(RingThread[] rings, IoUringTransportOptions options)
    {
        if (options.KernelEventLoop == KernelEventLoop.Off || options.TestHooks?.KernelEventLoopPlacement == false
            || rings.Length < 2 || rings.Length > RingKernelLoop.PlaceRings)
        {
            return null;
        }

        foreach (RingThread ring in rings)
        {
            if (!ring.CanPlace)
            {
                return null;
            }
        }

        var placement = new RingPlacement(rings);
        var fds = new int[rings.Length];
        for (int i = 0; i < rings.Length; i++)
        {
            // Set on the ring thread before its start was signalled. (-1 for a test: every MSG_RING fails.)
            fds[i] = options.TestHooks?.KernelEventLoopPlaceBrokenTargets == true ? -1 : rings[i].Ring.Fd;
        }

        uint margin = options.TestHooks?.KernelEventLoopPlaceMargin ?? DefaultMargin;
        var setups = new SetupWork[rings.Length];
        for (int i = 0; i < rings.Length; i++)
        {
            setups[i] = new SetupWork(placement, fds, margin);
            rings[i].Post(setups[i], 0);
        }

        bool all = true;
        foreach (SetupWork setup in setups)
        {
            all &= setup.Done.Task.GetAwaiter().GetResult();
        }

        if (!all)
        {
            // A ring ended while starting (it failed): no placement. The rings that set it up keep
            // their pages for FreePages; their loops place nothing, since no listener is placeable.
            placement._failedStart = true;
        }

        return placement;
    }

    /// <summary>Whether the group places connections (every ring set it up).</summary>
    public bool Active => !_failedStart;

    /// <summary>Ring <paramref name="index"/>'s loads array, from its setup (its ring thread).</summary>
    internal void SetLoads(int index, uint* loads) => _loads[index] = loads;

    /// <summary>
    /// Ring <paramref name="index"/>'s open connections changed (its ring thread): stores the count
    /// into every ring's page (relaxed: a hint; see the remarks).
    /// </summary>
    public void PublishLoad(int index, long active)
    {
        uint load = active >= RingKernelLoop.LoadGone ? RingKernelLoop.LoadGone - 1 : (uint)active;
        foreach (uint* loads in _loads)
        {
            if (loads is not null)
            {
                Volatile.Write(ref loads[index], load);
            }
        }
    }

    /// <summary>Ring <paramref name="index"/> stops or failed (its ring thread): never a target again.</summary>
    public void MarkGone(int index)
    {
        foreach (uint* loads in _loads)
        {
            if (loads is not null)
            {
                Volatile.Write(ref loads[index], RingKernelLoop.LoadGone);
            }
        }
    }

    /// <summary>Gives <paramref name="listener"/> an id unique in the process (0 when the ids ran out: it places nothing).</summary>
    public int Register(IoUringConnectionListener listener)
    {
        if (!Active)
        {
            return 0;
        }

        int id = Interlocked.Increment(ref s_lastListenerId);
        if (id is <= 0 or > UserData.ListenerIdMask)
        {
            return 0; // ran out (and stays out: the counter only grows)
        }

        _listeners[id] = listener;
        return id;
    }

    /// <summary>The listener unbound: connections handed over for it from now on are closed.</summary>
    public void Unregister(int id) => _listeners.TryRemove(id, out _);

    /// <summary>The listener of a handed-over connection, or null if it unbound.</summary>
    public IoUringConnectionListener? Find(int id) => _listeners.TryGetValue(id, out IoUringConnectionListener? listener) ? listener : null;

    /// <summary>Frees the pages once no ring runs (<paramref name="ringsEnded"/>); otherwise leaves them.</summary>
    public void FreePages(bool ringsEnded)
    {
        if (!ringsEnded)
        {
            return; // a ring thread may still store loads: leak the pages rather than free them under it
        }

        for (int i = 0; i < _loads.Length; i++)
        {
            if (_loads[i] is not null)
            {
                RingKernelLoop.FreeKeptPage(_loads[i]);
                _loads[i] = null;
            }
        }
    }

    /// <summary>Placement's setup on one ring (its ring thread, before any listener starts there).</summary>
    private sealed class SetupWork(RingPlacement placement, int[] fds, uint margin) : IRingWork
    {
        public TaskCompletionSource<bool> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Execute(RingThread ring, int operation)
        {
            Debug.Assert(ring.IsOnRingThread, "a ring's page is written by its own thread between its enters");
            try
            {
                placement.SetLoads(ring.Index, ring.EnablePlacement(placement, fds, margin));
            }
            catch
            {
                Done.TrySetResult(false); // the throw fails the ring (posted work without a slot)
                throw;
            }

            Done.TrySetResult(true);
        }

        public void Reject(int operation, Exception error) => Done.TrySetResult(false);
    }
}
