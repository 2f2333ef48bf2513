using System;
using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Threading;
using IoUring.Interop;

namespace IoUring.Transport.Internal;

/// <summary>
/// What one sendmsg needs: the pins of the segments, and the iovec array and msghdr in native
/// memory. A connection rents one for each send and gives it back when the send completes, so an
/// idle connection holds none (each is about 2.5 KB).
/// </summary>
/// <remarks>
/// The kernel reads the msghdr and iovecs when it prepares the request (with
/// IORING_FEAT_SUBMIT_STABLE, at submission; see io_uring_setup(2)) and again if it re-issues it;
/// a send's state is only given back after its completion (and, for a zero-copy send, its
/// notification), when the kernel is done with all of it.
/// </remarks>
internal sealed unsafe class SendState
{
    public const int MaxIovecs = 64;
    private const int MaxPooled = 256; // states kept for reuse process-wide; beyond that they are freed
    private static readonly ConcurrentQueue<SendState> s_pool = new();
    private static int s_pooled;

    private SendState()
    {
        Iovecs = (IoVec*)NativeMemory.AllocZeroed((nuint)(MaxIovecs * sizeof(IoVec) + sizeof(MsgHdr)));
        Msg = (MsgHdr*)(Iovecs + MaxIovecs);
    }

    /// <summary>The pins of the segments being sent (pool blocks pin for free; other memory really pins).</summary>
    public MemoryHandle[] Handles { get; } = new MemoryHandle[MaxIovecs];

    /// <summary>The segments being sent, to retire their blocks if the kernel may still read them when the ring dies.</summary>
    public ReadOnlyMemory<byte>[] Segments { get; } = new ReadOnlyMemory<byte>[MaxIovecs];

    /// <summary>Set when the ring died with this send's zero-copy data in the kernel: the state and its pins are never released.</summary>
    public bool Retired { get; set; }

    /// <summary>Native: the kernel reads it when it issues (and re-issues) the sendmsg.</summary>
    public IoVec* Iovecs { get; }

    /// <summary>Native, for the same reason; right after the iovecs.</summary>
    public MsgHdr* Msg { get; }

    public static SendState Rent()
    {
        if (s_pool.TryDequeue(out SendState? state))
        {
            Interlocked.Decrement(ref s_pooled);
            return state;
        }

        return new SendState();
    }

    public static void Return(SendState state)
    {
        if (Interlocked.Increment(ref s_pooled) <= MaxPooled)
        {
            s_pool.Enqueue(state);
            return;
        }

        Interlocked.Decrement(ref s_pooled);
        NativeMemory.Free(state.Iovecs);
    }
}
