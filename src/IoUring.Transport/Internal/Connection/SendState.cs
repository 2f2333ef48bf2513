using System;
using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Threading;
using IoUring.Interop;

namespace IoUring.Transport.Internal;

/// <summary>
/// What one sendmsg needs: the pins of the segments, and the iovec array and msghdr in native
/// memory. A connection rents one for each send of more than one segment and gives it back when
/// the send completes, so an idle connection holds none. Two sizes: <see cref="SmallIovecs"/>
/// (about 3.5 KB) for most sends, and <see cref="MaxIovecs"/> (about 14 KB) for a send of more than
/// <see cref="LargeFrom"/> bytes, so that one sendmsg takes a 1 MiB response of pool blocks whole,
/// as Kestrel's Sockets transport gives the kernel the whole sequence (perf/README.md, "The
/// application scenarios": with at most 64 segments a 1 MiB response took four sendmsgs, each
/// awaited, and io_uring served 0.68 of Sockets' requests per second; with 256, 1.32).
/// </summary>
/// <remarks>
/// The kernel reads the msghdr and iovecs when it prepares the request (with
/// IORING_FEAT_SUBMIT_STABLE, at submission; see io_uring_setup(2)) and again if it re-issues it;
/// a send's state is only given back after its completion (and, for a zero-copy send, its
/// notification), when the kernel is done with all of it.
/// </remarks>
internal sealed unsafe class SendState
{
    /// <summary>The most segments one sendmsg takes (a large state); the rest of the sequence goes in the next.</summary>
    public const int MaxIovecs = 256;

    /// <summary>The segments a small state takes.</summary>
    public const int SmallIovecs = 64;

    /// <summary>Sends of more bytes than this rent a large state: more than 64 pool blocks of 4 KiB.</summary>
    public const long LargeFrom = SmallIovecs * PinnedBlockMemoryPool.BlockSize;

    private const int MaxPooled = 256; // small states kept for reuse process-wide; beyond that they are freed
    private const int MaxPooledLarge = 64; // and large ones
    private static readonly ConcurrentQueue<SendState> s_pool = new();
    private static readonly ConcurrentQueue<SendState> s_poolLarge = new();
    private static int s_pooled;
    private static int s_pooledLarge;

    private SendState(int capacity)
    {
        Iovecs = (IoVec*)NativeMemory.AllocZeroed((nuint)(capacity * sizeof(IoVec) + sizeof(MsgHdr)));
        Msg = (MsgHdr*)(Iovecs + capacity);
        Handles = new MemoryHandle[capacity];
        Segments = new ReadOnlyMemory<byte>[capacity];
    }

    /// <summary>The pins of the segments being sent (pool blocks pin for free; other memory really pins).</summary>
    public MemoryHandle[] Handles { get; }

    /// <summary>The segments being sent, to retire their blocks if the kernel may still read them when the ring dies.</summary>
    public ReadOnlyMemory<byte>[] Segments { get; }

    /// <summary>Set when the ring died with this send's zero-copy data in the kernel: the state and its pins are never released.</summary>
    public bool Retired { get; set; }

    /// <summary>Native: the kernel reads it when it issues (and re-issues) the sendmsg.</summary>
    public IoVec* Iovecs { get; }

    /// <summary>Native, for the same reason; right after the iovecs.</summary>
    public MsgHdr* Msg { get; }

    private bool IsLarge => Handles.Length == MaxIovecs;

    /// <summary>A state for a send of <paramref name="bytes"/> bytes: large above <see cref="LargeFrom"/>.</summary>
    public static SendState Rent(long bytes)
    {
        bool large = bytes > LargeFrom;
        if ((large ? s_poolLarge : s_pool).TryDequeue(out SendState? state))
        {
            Interlocked.Decrement(ref large ? ref s_pooledLarge : ref s_pooled);
            return state;
        }

        return new SendState(large ? MaxIovecs : SmallIovecs);
    }

    public static void Return(SendState state)
    {
        bool large = state.IsLarge;
        ref int pooled = ref large ? ref s_pooledLarge : ref s_pooled;
        if (Interlocked.Increment(ref pooled) <= (large ? MaxPooledLarge : MaxPooled))
        {
            (large ? s_poolLarge : s_pool).Enqueue(state);
            return;
        }

        Interlocked.Decrement(ref pooled);
        NativeMemory.Free(state.Iovecs);
    }
}
