using System;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading;
using IoUring.Interop;

namespace IoUring;

/// <summary>
/// A provided buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19; io_uring_register_buf_ring(3))
/// and the fixed-size buffers it hands to the kernel. A receive with IOSQE_BUFFER_SELECT takes the
/// buffer at the ring's head when data arrives, so idle sockets hold no memory; the CQE names the
/// buffer it used, and the application gives it back with <see cref="Return(ushort)"/>.
/// </summary>
/// <remarks>
/// Shared memory protocol: the entries and the tail belong to the application; the kernel keeps
/// its head privately and only reads entries between its head and our tail. The tail is
/// published with a release store after the entries are written, and the kernel loads it with
/// acquire (io_uring_buf_ring_advance(3)). Not thread-safe: use it on the ring's thread.
/// Buffer memory is native, so it never moves while the kernel writes into it.
/// </remarks>
internal sealed unsafe class BufferRing : IDisposable
{
    private const int TailOffset = 14; // struct io_uring_buf_ring overlays its u16 tail on bufs[0].resv.

    private readonly Ring _ring;
    private readonly IoUringBuf* _entries; // we write; the kernel reads entries in [its head, our tail).
    private readonly nuint _entriesBytes;
    private readonly byte* _buffers;       // the kernel writes received data; we read after the CQE.
    private readonly ushort[] _entryOfBuffer; // ring entry each buffer id was last placed in (for bundles).
    private readonly uint _mask;
    private ushort _tail;                  // ours: next entry to fill; wraps at 2^16 like the kernel's.
    private bool _disposed;

    private BufferRing(Ring ring, ushort groupId, int count, int bufferSize, IoUringBuf* entries, nuint entriesBytes, byte* buffers)
    {
        _ring = ring;
        GroupId = groupId;
        Count = count;
        BufferSize = bufferSize;
        _entries = entries;
        _entriesBytes = entriesBytes;
        _buffers = buffers;
        _mask = (uint)count - 1;
        _entryOfBuffer = new ushort[count];
    }

    /// <summary>The buffer group id that SQEs name in <c>buf_group</c>.</summary>
    public ushort GroupId { get; }

    /// <summary>Number of buffers (and ring entries).</summary>
    public int Count { get; }

    /// <summary>Bytes per buffer.</summary>
    public int BufferSize { get; }

    /// <summary>
    /// Registers a ring of <paramref name="count"/> buffers of <paramref name="bufferSize"/> bytes
    /// under <paramref name="groupId"/>, all handed to the kernel at once. Must run on the ring's thread.
    /// </summary>
    public static BufferRing Create(Ring ring, ushort groupId, int count, int bufferSize)
    {
        ArgumentNullException.ThrowIfNull(ring);
        // Entries are a power of two, at most 32768 (io_uring_register_buf_ring(3)); ids are 16 bits.
        if (count < 1 || count > 32768 || !BitOperations.IsPow2(count))
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, "The buffer count must be a power of two from 1 to 32768.");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(bufferSize, 1);

        // The ring memory must be page aligned; an anonymous mapping is, and starts zeroed (tail 0).
        nuint pageSize = (nuint)Environment.SystemPageSize;
        nuint entriesBytes = ((nuint)count * (nuint)sizeof(IoUringBuf) + pageSize - 1) & ~(pageSize - 1);
        void* entries = Libc.Mmap(null, entriesBytes, Libc.ProtRead | Libc.ProtWrite, Libc.MapPrivate | Libc.MapAnonymous, -1, 0);
        if (entries == Libc.MapFailed)
        {
            throw new IoUringException("mmap of a provided buffer ring", Libc.LastErrno);
        }

        byte* buffers = null;
        try
        {
            buffers = (byte*)NativeMemory.AlignedAlloc((nuint)count * (nuint)bufferSize, 64);
            IoUringBufReg reg = default;
            reg.RingAddr = (ulong)entries;
            reg.RingEntries = (uint)count;
            reg.Bgid = groupId;
            Ring.ThrowOnError(ring.Register(IoUringConstants.Register.RegisterPbufRing, &reg, 1), "IORING_REGISTER_PBUF_RING");
        }
        catch
        {
            NativeMemory.AlignedFree(buffers);
            Libc.Munmap(entries, entriesBytes);
            throw;
        }

        var bufferRing = new BufferRing(ring, groupId, count, bufferSize, (IoUringBuf*)entries, entriesBytes, buffers);
        for (int i = 0; i < count; i++)
        {
            bufferRing.Add((ushort)i, i);
        }

        bufferRing.Advance(count);
        return bufferRing;
    }

    /// <summary>The memory of buffer <paramref name="bufferId"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* GetBuffer(ushort bufferId) => _buffers + ((nint)bufferId * BufferSize);

    /// <summary>The first <paramref name="length"/> bytes of buffer <paramref name="bufferId"/>.</summary>
    public Span<byte> GetSpan(ushort bufferId, int length) => new(GetBuffer(bufferId), length);

    /// <summary>
    /// Writes buffer <paramref name="bufferId"/> into the entry <paramref name="offset"/> places past
    /// the tail (io_uring_buf_ring_add(3)). The kernel cannot see it until <see cref="Advance"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(ushort bufferId, int offset)
    {
        uint index = (uint)(_tail + offset) & _mask;
        IoUringBuf* entry = &_entries[index];
        // Field by field: entry 0's resv is the ring's tail and must not be overwritten.
        entry->Addr = (ulong)GetBuffer(bufferId);
        entry->Len = (uint)BufferSize;
        entry->Bid = bufferId;
        _entryOfBuffer[bufferId] = (ushort)index;
    }

    /// <summary>Publishes <paramref name="count"/> entries written by <see cref="Add"/> (io_uring_buf_ring_advance(3)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Advance(int count)
    {
        _tail = (ushort)(_tail + count);
        // Release: the entries written above are visible to the kernel before the tail that covers them.
        Volatile.Write(ref *(ushort*)((byte*)_entries + TailOffset), _tail);
    }

    /// <summary>Gives one buffer back to the kernel.</summary>
    public void Return(ushort bufferId)
    {
        Add(bufferId, 0);
        Advance(1);
    }

    /// <summary>
    /// Lists the buffers a bundle receive filled: a bundle CQE names its first buffer, and the
    /// kernel took the following ring entries in order, <see cref="BufferSize"/> bytes each,
    /// until <paramref name="bytes"/> were placed. Those entries cannot have been refilled yet,
    /// because their buffers are still out; so the ids are read back from the ring itself.
    /// </summary>
    /// <returns>The number of buffer ids written to <paramref name="bufferIds"/>.</returns>
    public int GetBundleBufferIds(ushort firstBufferId, int bytes, Span<ushort> bufferIds)
    {
        int count = (int)(((uint)bytes + (uint)BufferSize - 1) / (uint)BufferSize);
        if (count == 0)
        {
            count = 1; // a zero-byte bundle completion still names (and consumes) its first buffer.
        }

        uint index = _entryOfBuffer[firstBufferId];
        for (int i = 0; i < count; i++)
        {
            bufferIds[i] = _entries[(index + (uint)i) & _mask].Bid;
        }

        return count;
    }

    /// <summary>Unregisters the ring (on the ring's thread) and frees its memory.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        IoUringBufReg reg = default;
        reg.Bgid = GroupId;
        _ = _ring.Register(IoUringConstants.Register.UnregisterPbufRing, &reg, 1);
        Libc.Munmap(_entries, _entriesBytes);
        NativeMemory.AlignedFree(_buffers);
    }
}
