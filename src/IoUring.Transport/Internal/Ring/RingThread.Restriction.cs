using System;
using IoUring.Interop;

namespace IoUring.Transport.Internal;

// The ring's opcode allowlist (IoUringTransportOptions.RestrictRingOperations): hardening, so a
// ring that memory corruption gets hold of cannot open files, connect elsewhere or write to
// arbitrary descriptors (OpcodeAllowlist in the binding says what the kernel does).
internal sealed partial class RingThread
{
    /// <summary>
    /// Every opcode the transport submits, and nothing else: multishot accept; multishot receive;
    /// send, sendmsg and their zero-copy forms; cancel (by user_data and by fd); the wake read of
    /// the eventfd; the accept backoff's timeout. A new Prep… call in the transport adds its opcode
    /// here, or its SQEs complete with -EACCES where the kernel has the filters (Linux 7.0+).
    /// Shutdown and close of sockets are syscalls, not SQEs. Connect is added only for rings that
    /// a connection factory may use (<see cref="ConnectAllowed"/>), and MSG_RING only for rings
    /// that may run the kernel event loop, which places connections with it.
    /// </summary>
    internal static ReadOnlySpan<byte> AllowedOperations =>
    [
        IoUringConstants.Op.Accept,
        IoUringConstants.Op.Recv,
        IoUringConstants.Op.Send,
        IoUringConstants.Op.SendMsg,
        IoUringConstants.Op.SendZc,
        IoUringConstants.Op.SendMsgZc,
        IoUringConstants.Op.AsyncCancel,
        IoUringConstants.Op.Read,
        IoUringConstants.Op.Timeout,
    ];

    /// <summary>Whether this ring runs only <see cref="AllowedOperations"/> (set before the loop starts).</summary>
    public bool OperationsRestricted { get; private set; }

    /// <summary>
    /// Whether this ring may connect sockets: it is unrestricted, or its allowlist has connect
    /// because an <see cref="IoUringConnectionFactory"/> was created before the ring started
    /// (<see cref="IoUringTransportOptions.AllowConnect"/>). Set before the loop starts.
    /// </summary>
    public bool ConnectAllowed { get; private set; } = true;

    /// <summary>Why the allowlist was asked for and not registered (the kernel predates 7.0, ...); null otherwise. Set before the loop starts.</summary>
    public IoUringException? OperationRestrictionRefusal { get; private set; }

    /// <summary>
    /// Registers the allowlist when the options ask for it, before the ring's first SQE. A refusal
    /// is kept, not thrown: the ring runs unrestricted and the factory logs the reason once, at Debug.
    /// </summary>
    private void RestrictOperations()
    {
        if (!_options.RestrictRingOperations)
        {
            return;
        }

        try
        {
            bool connect = _options.AllowConnect;
            var allowed = new System.Collections.Generic.List<byte>(AllowedOperations.ToArray());
            if (connect)
            {
                allowed.Add(IoUringConstants.Op.Connect);
            }

            if (_options.KernelEventLoop != KernelEventLoop.Off)
            {
                // The kernel event loop hands connections to other rings of the group with MSG_RING
                // (RingPlacement): it posts a CQE on another ring, nothing more.
                allowed.Add(IoUringConstants.Op.MsgRing);
            }

            OpcodeAllowlist.Register(_ring!, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(allowed));
            OperationsRestricted = true;
            ConnectAllowed = connect;
        }
        catch (IoUringException ex)
        {
            OperationRestrictionRefusal = ex;
        }
    }
}
