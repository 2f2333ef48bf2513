using System;
using System.Diagnostics;
using IoUring.Interop;

namespace IoUring.Transport.Internal;

/// <summary>
/// The slots a ring reserves for connections whose first receive the kernel event loop arms
/// (bpf/event_loop.bpf.c, arm_receives): as soon as an armable accept completes, the program queues
/// the connection's multishot receive with the next <c>user_data</c> published here, so the
/// connection and its first bytes can reach user space in one return. Ring thread only; the shared
/// fields are read and written between enters (<see cref="RingKernelLoop"/>).
/// </summary>
/// <remarks>
/// <para>
/// Positions run on forever (modulo 2^32); position p's tag is at <c>p % ArmSlots</c>. Published:
/// [<see cref="RingKernelLoop.ArmHead"/>, <c>_tail</c>), slots reserved with this object as their
/// placeholder handler. Armed and not yet matched: [<c>_matched</c>, ArmHead): the program queued a
/// receive on the descriptor it recorded, and the accept's CQE is still ahead of the ring thread in
/// the CQ. A position is published again only once matched, so the program's record of it is read
/// before it can be overwritten.
/// </para>
/// <para>
/// A reserved slot whose connection never takes it over (the listener stopped, the connection's
/// setup failed) keeps this object as its handler: <see cref="Abandon"/> cancels the receive by its
/// <c>user_data</c> (closing the descriptor would not end an io_uring request), the receive's CQEs
/// give their buffers back, and its last CQE (no IORING_CQE_F_MORE) frees the slot.
/// </para>
/// </remarks>
internal sealed class KernelArmedReceives : IRingCompletionHandler
{
    private readonly RingThread _ring;
    private readonly RingKernelLoop _loop;
    private readonly RingSlot[] _reserved = new RingSlot[RingKernelLoop.ArmSlots]; // by position % ArmSlots
    private readonly int _reserve;   // how many tags to keep published (at most ArmSlots)
    private uint _tail;              // one past the last position published (the shared arm_tail's only writer)
    private uint _matched;           // one past the last armed position matched to its accept's CQE
    private int _listeners;          // armable listeners running on the ring

    public KernelArmedReceives(RingThread ring, RingKernelLoop loop, int reserve)
    {
        Debug.Assert(reserve is > 0 and <= RingKernelLoop.ArmSlots, "the program's table holds ArmSlots tags");
        _ring = ring;
        _loop = loop;
        _reserve = reserve;
        _tail = _matched = loop.ArmTail;
    }

    /// <summary>An armable listener started on the ring (ring thread): tags are published from the next turn on.</summary>
    public void ListenerStarted() => _listeners++;

    /// <summary>An armable listener stopped (ring thread): with none left, the unused tags are withdrawn on the next turn.</summary>
    public void ListenerStopped() => _listeners--;

    /// <summary>
    /// Between enters, each turn: tops the published tags up to the reserve while an armable
    /// listener runs and the ring is not stopping; otherwise withdraws the unused ones, so their
    /// slots are free and the ring can end. The ones armed already stay until their accepts are
    /// reaped (<see cref="TryTake"/>).
    /// </summary>
    public void Refresh(bool stopping)
    {
        if (stopping || _listeners == 0)
        {
            Withdraw();
            return;
        }

        if (_tail - _matched >= (uint)_reserve)
        {
            return;
        }

        do
        {
            RingSlot slot = _ring.AllocateSlot(this);
            _reserved[_tail % RingKernelLoop.ArmSlots] = slot;
            _loop.PublishArmTag(_tail, slot.Tag(OpKind.Recv));
            _tail++;
        }
        while (_tail - _matched < (uint)_reserve);

        _loop.ArmTail = _tail; // after the tags: the program reads them up to the tail (same thread, program order)
    }

    private void Withdraw()
    {
        uint head = _loop.ArmHead;
        if (head == _tail)
        {
            return;
        }

        _loop.ArmTail = head; // first: the program takes no tag at or past it from the next enter on
        for (uint position = head; position != _tail; position++)
        {
            _ring.FreeSlot(_reserved[position % RingKernelLoop.ArmSlots]); // never in a request: free at once
        }

        _tail = head;
    }

    /// <summary>
    /// An armable accept's CQE with a descriptor and IORING_CQE_F_MORE, reaped (ring thread; every
    /// such CQE, in CQ order, before anything else is done with it): whether the program armed the
    /// receive of <paramref name="fd"/>, and the reserved slot its tag names, which the connection
    /// must take over or <see cref="Abandon"/>. Matching the oldest unmatched record by descriptor
    /// is sound: the program arms in CQ order, and the descriptors of the accepts not reaped yet are
    /// all open, so distinct; an accept it skipped (no tag, the SQ full) cannot share the number of
    /// a later one it armed.
    /// </summary>
    public bool TryTake(int fd, out RingSlot slot)
    {
        if (_matched != _loop.ArmHead && _loop.ArmedFd(_matched) == fd)
        {
            slot = _reserved[_matched % RingKernelLoop.ArmSlots];
            _matched++;
            return true;
        }

        slot = RingSlot.None;
        return false;
    }

    /// <summary>
    /// The connection that should have taken <paramref name="slot"/> will not (ring thread): cancel
    /// its armed receive by <c>user_data</c>; this object takes its completions and frees the slot
    /// after the last one.
    /// </summary>
    public unsafe void Abandon(RingSlot slot)
    {
        _ring.ReplaceSlotHandler(slot, this);
        Sqe* sqe = _ring.GetSqe(OpKind.Cancel, slot);
        sqe->PrepCancel64(slot.Tag(OpKind.Recv));
    }

    /// <summary>An abandoned receive's completion: its buffer goes back; its last CQE frees the slot.</summary>
    public void OnCompletion(RingThread ring, OpKind kind, in Cqe cqe)
    {
        if (kind != OpKind.Recv)
        {
            return; // the cancel's own result: the receive reports its end
        }

        if (cqe.HasBuffer)
        {
            ring.Buffers.Taken();
            ring.Buffers.ReturnOnRing(cqe.BufferId);
        }

        if (!cqe.HasMore)
        {
            ring.FreeSlot(new RingSlot(UserData.Slot(cqe.UserData), UserData.Generation(cqe.UserData)));
        }
    }

    /// <summary>Handling an abandoned receive's completion cannot throw but for a bug; the slot stays reserved.</summary>
    public void OnFault(Exception error) => Debug.Fail($"an abandoned receive's completion failed: {error}");

    /// <summary>The ring failed: its descriptors and requests go with it.</summary>
    public void OnRingFailed(Exception error)
    {
    }
}
