using System;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading.Tasks;
using IoUring.Interop;
using IoUring.Sockets;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// One listening socket served by one ring with a multishot accept. TCP endpoints get one per ring
/// (a SO_REUSEPORT group, so the kernel spreads connections); Unix and adopted-handle endpoints get
/// a single one, which hands its connections to the rings in turn. Where the group places
/// connections in the kernel (<see cref="RingPlacement"/>), each accept is placeable instead: the
/// kernel event loop keeps the connection here or hands it to a less loaded ring itself.
/// </summary>
internal sealed unsafe class RingListener : IRingCompletionHandler, IRingWork
{
    private static readonly TimeSpan s_minBackoff = TimeSpan.FromMilliseconds(1);
    private static readonly TimeSpan s_maxBackoff = TimeSpan.FromSeconds(1);

    private readonly RingThread _ring;
    private readonly int _fd;
    private readonly bool _ownsFd;
    private readonly IoUringConnectionListener _listener;
    private readonly RingGroup _group;
    private readonly bool _distribute;
    private readonly ILogger _logger;
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Ring-thread state.
    private RingSlot _slot = RingSlot.None;
    private bool _started;          // it took a slot (from then on the socket is closed by the stop, or by OnRingFailed)
    private bool _acceptArmed;
    private bool _backoffArmed;
    private bool _stopping;
    private TimeSpan _backoff = s_minBackoff;
    private OpKind _acceptKind = OpKind.Accept; // AcceptArmable where the kernel event loop arms its connections' first receive, AcceptPlaceable where it also places them
    private KernelTimespec* _backoffTimespec; // native: the kernel reads it when the timeout SQE is submitted

    public RingListener(RingThread ring, int fd, bool ownsFd, IoUringConnectionListener listener, RingGroup group, bool distribute, ILogger logger)
    {
        _ring = ring;
        _fd = fd;
        _ownsFd = ownsFd;
        _listener = listener;
        _group = group;
        _distribute = distribute;
        _logger = logger;
    }

    public Task Stopped => _stopped.Task;

    /// <summary>The endpoint's group-wide id for placement (<see cref="RingPlacement.Register"/>); 0: not placeable. Set before <see cref="Start"/>.</summary>
    public int PlacementId { get; set; }

    public void Start() => _ring.Post(this, (int)ListenerWork.Start);

    public void Stop() => _ring.Post(this, (int)ListenerWork.Stop);

    public void Execute(RingThread ring, int operation)
    {
        Debug.Assert(ring.IsOnRingThread && ring == _ring, "a listener's posted work runs on its own ring's thread");
        switch ((ListenerWork)operation)
        {
            case ListenerWork.Start:
                _slot = ring.AllocateSlot(this);
                _started = true;
                if (PlacementId != 0 && ring.Places && ring.PublishPlaceableListener(_slot.Tag(OpKind.AcceptPlaceable), PlacementId))
                {
                    // The kernel event loop keeps each connection here (and arms its receive with a
                    // slot of this ring) or hands it to a less loaded ring, whose loop arms it there.
                    _acceptKind = OpKind.AcceptPlaceable;
                    ring.ArmableListenerStarted();
                }
                else if (!_distribute && ring.ArmsReceives)
                {
                    // Its connections stay on this ring, so the kernel may arm their first receive
                    // with a slot of this ring (a handed-over connection's slot is on another one).
                    _acceptKind = OpKind.AcceptArmable;
                    ring.ArmableListenerStarted();
                }

                _backoffTimespec = (KernelTimespec*)NativeMemory.AllocZeroed((nuint)sizeof(KernelTimespec));
                ArmAccept();
                break;
            case ListenerWork.Stop:
                StopOnRing();
                break;
        }
    }

    public void OnCompletion(RingThread ring, OpKind kind, in Cqe cqe)
    {
        Debug.Assert(ring.IsOnRingThread && ring == _ring, "a listener's completions arrive on its own ring's thread");
        if (kind == OpKind.AcceptBackoff)
        {
            _backoffArmed = false;
            if (!_stopping && !_acceptArmed)
            {
                ArmAccept();
            }

            TryFinishStop();
            return;
        }

        if (kind == OpKind.AcceptHanded)
        {
            return; // the kernel event loop handed the descriptor to another ring: its connection is that ring's
        }

        if (kind is not (OpKind.Accept or OpKind.AcceptArmable or OpKind.AcceptPlaceable))
        {
            return;
        }

        int result = cqe.Res;
        // First, for every armable CQE the program may have acted on, in CQ order (the matching
        // depends on it): whether its connection's receive is armed already.
        RingSlot armed = RingSlot.None;
        if ((kind is OpKind.AcceptArmable or OpKind.AcceptPlaceable) && cqe.HasMore && result >= 0)
        {
            _ = ring.TakeArmedReceive(result, out armed);
        }

        if (!cqe.HasMore)
        {
            _acceptArmed = false;
        }

        if (result >= 0)
        {
            _backoff = s_minBackoff;
            Accepted(result, armed);
        }
        else if (!_stopping && result is not (-Errno.ECANCELED or -Errno.ECONNABORTED or -Errno.EINTR or -Errno.EAGAIN))
        {
            // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or a listener the
            // kernel refuses: retrying at once would spin. Wait, doubling up to 1 s. (ECONNABORTED
            // and the like concern one connection that went away first, not the listener.)
            IoUringTransportLog.AcceptBackoff(_logger, -result, _backoff.TotalMilliseconds);
            if (_acceptArmed)
            {
                CancelAccept();
            }

            ArmBackoff();
        }

        // The multishot ended (after an error, or for reasons of the kernel's own) and no pause is
        // pending: accept again. A cancel's ECANCELED that arrives after its pause expired lands here too.
        if (!_stopping && !_acceptArmed && !_backoffArmed)
        {
            ArmAccept();
        }

        TryFinishStop();
    }

    /// <summary>Handling a completion threw (a bug): log it, pause, then accept again, as after an accept error (ring thread).</summary>
    public void OnFault(Exception error)
    {
        IoUringTransportLog.ListenerError(_logger, _ring.Index, error);
        if (!_started)
        {
            // Its start failed before it had a slot (posted work's faults come here too): this
            // ring serves nothing of the endpoint, as if the start had been rejected.
            Reject((int)ListenerWork.Start, error);
            return;
        }

        if (_stopping || !_slot.IsAssigned)
        {
            TryFinishStop();
            return;
        }

        if (_acceptArmed)
        {
            CancelAccept();
        }

        ArmBackoff();
    }

    private void Accepted(int fd, RingSlot armed)
    {
        if (_stopping)
        {
            Libc.Close(fd);
            if (armed.IsAssigned)
            {
                _ring.AbandonArmedReceive(armed); // closing the descriptor does not end the receive
            }

            return;
        }

        // A placeable accept's connection is here because the kernel event loop kept it here.
        RingThread target = _distribute && _acceptKind != OpKind.AcceptPlaceable ? _group.NextRing() : _ring;
        if (target == _ring)
        {
            _listener.OnAccepted(_ring, fd, armed);
        }
        else
        {
            target.Post(new AdoptWork(_listener, fd), (int)ListenerWork.Adopt);
        }
    }

    private void ArmAccept()
    {
        // Accepted sockets stay blocking: io_uring polls them itself, and a blocking socket is what
        // a user of IConnectionSocketFeature expects.
        Sqe* sqe = _ring.GetSqe(_acceptKind, _slot);
        sqe->PrepMultishotAccept(_fd, SocketInterop.SOCK_CLOEXEC);
        _acceptArmed = true;
    }

    private void CancelAccept()
    {
        Sqe* sqe = _ring.GetSqe(OpKind.Cancel, _slot);
        sqe->PrepCancel64(_slot.Tag(_acceptKind));
    }

    private void ArmBackoff()
    {
        if (_backoffArmed)
        {
            return;
        }

        *_backoffTimespec = KernelTimespec.FromTimeSpan(_backoff);
        Sqe* sqe = _ring.GetSqe(OpKind.AcceptBackoff, _slot);
        sqe->PrepTimeout(_backoffTimespec, 0, 0);
        _backoffArmed = true;
        _backoff = _backoff * 2 > s_maxBackoff ? s_maxBackoff : _backoff * 2;
    }

    private void StopOnRing()
    {
        _stopping = true;
        if (_acceptKind == OpKind.AcceptPlaceable)
        {
            // Accepts from now on stay here (and are closed, as the listener stops), instead of
            // reaching rings whose connections for this listener would only be closed there.
            _ring.WithdrawPlaceableListener(_slot.Tag(OpKind.AcceptPlaceable));
        }
        if (_acceptArmed)
        {
            CancelAccept();
        }

        if (_backoffArmed)
        {
            Sqe* sqe = _ring.GetSqe(OpKind.Cancel, _slot);
            sqe->PrepCancel64(_slot.Tag(OpKind.AcceptBackoff));
        }

        TryFinishStop();
    }

    private void TryFinishStop()
    {
        if (!_stopping || _acceptArmed || _backoffArmed || !_slot.IsAssigned)
        {
            return;
        }

        // No request references the socket any more: close it, free the slot.
        if (_ownsFd)
        {
            Libc.Close(_fd);
        }

        _ring.FreeSlot(_slot);
        _slot = RingSlot.None;
        if (_acceptKind is OpKind.AcceptArmable or OpKind.AcceptPlaceable)
        {
            _ring.ArmableListenerStopped(); // with none left the ring withdraws its reserved slots
        }

        NativeMemory.Free(_backoffTimespec);
        _backoffTimespec = null;
        _stopped.TrySetResult();
    }

    /// <summary>
    /// The ring thread died (ring thread, in its last moments): close the socket, so the kernel
    /// sends new connections to the other rings' sockets of the group. The failure is logged by
    /// the ring; stopping this listener later has nothing left to do.
    /// </summary>
    public void OnRingFailed(Exception error)
    {
        if (_slot.IsAssigned && _ownsFd)
        {
            Libc.Close(_fd);
        }

        _slot = RingSlot.None;
        _stopped.TrySetResult();
        _listener.RingListenerFailed(error);
    }

    public void Reject(int operation, Exception error)
    {
        if ((ListenerWork)operation == ListenerWork.Start)
        {
            if (_ownsFd)
            {
                Libc.Close(_fd); // never started, so OnRingFailed did not see it
            }

            _listener.RingListenerFailed(error);
        }

        _stopped.TrySetResult();
    }

    /// <summary>What other threads ask of a listener's ring thread.</summary>
    private enum ListenerWork
    {
        Start = 1, // take a slot, arm the multishot accept
        Stop,      // cancel the accept and any backoff; close once their last completions are in
        Adopt,     // (AdoptWork) a connection another ring's listener accepted for this ring
    }

    /// <summary>A connection accepted on one ring and handed to another.</summary>
    private sealed class AdoptWork(IoUringConnectionListener listener, int fd) : IRingWork
    {
        public void Execute(RingThread ring, int operation) => listener.OnAccepted(ring, fd, RingSlot.None);

        public void Reject(int operation, Exception error) => Libc.Close(fd); // its ring died before taking it
    }
}
