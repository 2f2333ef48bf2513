using System;
using System.Buffers;

namespace IoUring.Transport.Internal;

/// <summary>
/// <see cref="Memory{T}"/> over one provided receive buffer: native memory the kernel wrote and
/// that stays put until the buffer goes back to its ring. One instance per buffer, made once.
/// </summary>
internal sealed unsafe class ReceiveBufferMemory : MemoryManager<byte>
{
    private readonly byte* _pointer;
    private readonly int _length;

    public ReceiveBufferMemory(byte* pointer, int length)
    {
        _pointer = pointer;
        _length = length;
    }

    public override Span<byte> GetSpan() => new(_pointer, _length);

    // Native memory never moves: pinning is free.
    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
    }
}
