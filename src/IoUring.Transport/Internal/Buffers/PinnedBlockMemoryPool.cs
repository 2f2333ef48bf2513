using System;
using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Threading;

namespace IoUring.Transport.Internal;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of fixed 4 KiB blocks on the pinned object heap. The kernel reads
/// send data straight out of these blocks while a request is in flight, so they must never move;
/// pinning them at allocation makes <see cref="MemoryManager{T}.Pin"/> free of GC handles.
/// </summary>
internal sealed class PinnedBlockMemoryPool : MemoryPool<byte>
{
    /// <summary>The block size: the page size, and what Kestrel's own pool uses.</summary>
    public const int BlockSize = 4096;

    private readonly ConcurrentQueue<Block> _blocks = new();
    private long _rented;    // blocks currently out of the pool (a leak check for tests and metrics)
    private long _allocated; // blocks ever allocated (the pool's footprint)
    private bool _disposed;

    public override int MaxBufferSize => BlockSize;

    /// <summary>Blocks rented and not yet returned.</summary>
    public long RentedBlocks => Interlocked.Read(ref _rented);

    /// <summary>Blocks allocated since the pool was created.</summary>
    public long AllocatedBlocks => Interlocked.Read(ref _allocated);

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize > BlockSize)
        {
            throw new ArgumentOutOfRangeException(nameof(minBufferSize), minBufferSize, $"Blocks are {BlockSize} bytes.");
        }

        ObjectDisposedException.ThrowIf(_disposed, this);
        Interlocked.Increment(ref _rented);
        if (_blocks.TryDequeue(out Block? block))
        {
            block.Rented = true;
            return block;
        }

        Interlocked.Increment(ref _allocated);
        return new Block(this);
    }

    protected override void Dispose(bool disposing)
    {
        _disposed = true;
        _blocks.Clear();
    }

    /// <summary>
    /// Takes the block under <paramref name="memory"/> out of circulation for good: the kernel may
    /// still read it (a zero-copy send of a ring that died). Memory of other pools is left alone.
    /// </summary>
    public static void Retire(ReadOnlyMemory<byte> memory)
    {
        if (MemoryMarshal.TryGetMemoryManager(memory, out Block? block))
        {
            block.Retire();
        }
    }

    private void Return(Block block, bool reuse)
    {
        Interlocked.Decrement(ref _rented);
        if (reuse && !_disposed)
        {
            _blocks.Enqueue(block);
        }
    }

    private sealed unsafe class Block : MemoryManager<byte>
    {
        private static readonly ConcurrentBag<Block> s_retired = []; // kept alive: the pinned array must not be collected and reused
        private readonly PinnedBlockMemoryPool _pool;
        private bool _retired;
        private readonly byte[] _array = GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);

        public Block(PinnedBlockMemoryPool pool)
        {
            _pool = pool;
            Rented = true;
        }

        public bool Rented { get; set; }

        public void Retire()
        {
            _retired = true;
            s_retired.Add(this);
        }

        public override Span<byte> GetSpan() => _array;

        // The array lives on the pinned object heap: its address is stable without a GC handle.
        public override MemoryHandle Pin(int elementIndex = 0)
            => new((byte*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref _array[0]) + elementIndex);

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
            // MemoryManager.Dispose is IMemoryOwner.Dispose: the renter gives the block back.
            if (Rented)
            {
                Rented = false;
                _pool.Return(this, reuse: !_retired);
            }
        }
    }
}
