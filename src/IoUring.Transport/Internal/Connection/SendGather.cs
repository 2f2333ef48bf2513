using System;
using System.Buffers;
using IoUring.Interop;

namespace IoUring.Transport.Internal;

/// <summary>Builds the iovec array of one sendmsg from the output pipe's sequence.</summary>
internal static unsafe class SendGather
{
    /// <summary>
    /// Pins up to <paramref name="handles"/>.Length non-empty segments of <paramref name="buffer"/>
    /// into <paramref name="handles"/>, keeps them in <paramref name="segments"/> (as long as
    /// <paramref name="handles"/>) and points <paramref name="iovecs"/> at them, stopping before
    /// the byte count would pass int.MaxValue (sendmsg returns an int).
    /// </summary>
    /// <returns>The number of iovecs filled; <paramref name="total"/> is their byte count.</returns>
    public static int Fill(in ReadOnlySequence<byte> buffer, IoVec* iovecs, Span<MemoryHandle> handles, Span<ReadOnlyMemory<byte>> segments, out int total)
    {
        int count = 0;
        long bytes = 0;
        foreach (ReadOnlyMemory<byte> segment in buffer)
        {
            if (segment.IsEmpty)
            {
                continue;
            }

            if (count == handles.Length || bytes + segment.Length > int.MaxValue)
            {
                break;
            }

            // Pool blocks live on the pinned heap, so Pin is free; other memory gets a real pin.
            MemoryHandle handle = segment.Pin();
            handles[count] = handle;
            segments[count] = segment;
            iovecs[count] = new IoVec { Base = handle.Pointer, Length = (nuint)segment.Length };
            bytes += segment.Length;
            count++;
        }

        total = (int)bytes;
        return count;
    }
}
