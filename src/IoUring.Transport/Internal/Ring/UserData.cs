using System.Runtime.CompilerServices;

namespace IoUring.Transport.Internal;

/// <summary>
/// What a completion is for: the top byte of <c>user_data</c>. The kernel event loop
/// (bpf/event_loop.bpf.c) reads it too, to decide which completions may wait in the kernel:
/// <see cref="Cancel"/>, a zero-copy <see cref="Send"/>'s first CQE, and a
/// <see cref="SendDeferrable"/> that completed in full; the values are in bpf/iou_loop.h.
/// </summary>
internal enum OpKind : byte
{
    Wake = 1,
    Accept = 2,
    Recv = 3,
    Send = 4,
    Cancel = 5,
    AcceptBackoff = 6,
    Connect = 7,

    /// <summary>
    /// A send (or sendmsg) whose full completion the kernel event loop may hold for a later return:
    /// it took everything the connection's output pipe held (IoUringConnection.Send.cs). A
    /// connection's completion handler treats it as <see cref="Send"/>.
    /// </summary>
    SendDeferrable = 8,

    /// <summary>
    /// A multishot accept whose connections stay on its ring: for each of its CQEs with a
    /// descriptor and IORING_CQE_F_MORE the kernel event loop arms the connection's first receive
    /// with a slot the ring reserved (<see cref="KernelArmedReceives"/>). Handled as <see cref="Accept"/> otherwise.
    /// </summary>
    AcceptArmable = 9,

    /// <summary>
    /// A multishot accept whose connections the kernel event loop may hand to a less loaded ring of
    /// the group (<see cref="RingPlacement"/>); one it keeps has its receive armed as for
    /// <see cref="AcceptArmable"/>.
    /// </summary>
    AcceptPlaceable = 10,

    /// <summary>
    /// What the kernel event loop rewrites an <see cref="AcceptPlaceable"/> CQE's kind to once it
    /// handed the descriptor to another ring: the connection is that ring's; the listener only counts it.
    /// </summary>
    AcceptHanded = 11,

    /// <summary>
    /// The kernel event loop's IORING_OP_MSG_RING, whose CQE comes only when the hand-over failed
    /// (IOSQE_CQE_SKIP_SUCCESS). Not a slot's: <see cref="UserData.ListenerId"/> and
    /// <see cref="UserData.Descriptor"/> say whose connection it was; the ring takes it itself.
    /// </summary>
    Handover = 12,

    /// <summary>
    /// A connection another ring's kernel event loop handed to this ring (the MSG_RING's CQE, res
    /// the descriptor). Not a slot's, as <see cref="Handover"/>; this ring's program arms its
    /// receive as for an <see cref="AcceptArmable"/> accept.
    /// </summary>
    Adopt = 13,
}

/// <summary>
/// <c>user_data</c> layout: kind (8 bits) | generation (24 bits) | slot (32 bits). Completions are
/// routed by slot and checked by generation, never by fd: fds are reused as soon as they are
/// closed, and a late CQE of a previous owner must never reach the new one.
/// </summary>
internal static class UserData
{
    /// <summary>Generations wrap at 24 bits.</summary>
    public const uint GenerationMask = 0xFF_FFFF;

    /// <summary>
    /// The 24 bits a <see cref="OpKind.Handover"/> or <see cref="OpKind.Adopt"/> user_data has for
    /// the listener id, where a slot's has its generation (bpf/event_loop.bpf.c masks it so too).
    /// </summary>
    public const int ListenerIdMask = 0xFF_FFFF;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Encode(OpKind kind, int slot, uint generation)
        => ((ulong)kind << 56) | ((ulong)(generation & GenerationMask) << 32) | (uint)slot;

    public static OpKind Kind(ulong userData) => (OpKind)(userData >> 56);

    public static int Slot(ulong userData) => (int)(uint)userData;

    public static uint Generation(ulong userData) => (uint)(userData >> 32) & GenerationMask;

    /// <summary>
    /// The listener a <see cref="OpKind.Handover"/> or <see cref="OpKind.Adopt"/> completion is
    /// for: kind (8 bits) | listener id (24 bits) | descriptor (32 bits), as the kernel event loop
    /// writes it (bpf/event_loop.bpf.c, place_connection).
    /// </summary>
    public static int ListenerId(ulong userData) => (int)(userData >> 32) & ListenerIdMask;

    /// <summary>The descriptor a <see cref="OpKind.Handover"/> or <see cref="OpKind.Adopt"/> completion carries.</summary>
    public static int Descriptor(ulong userData) => (int)(uint)userData;
}
