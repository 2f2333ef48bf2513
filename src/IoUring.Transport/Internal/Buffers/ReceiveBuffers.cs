using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;

namespace IoUring.Transport.Internal;

/// <summary>A connection whose multishot receive ended for want of a provided buffer.</summary>
internal interface IReceiveBufferWaiter
{
    /// <summary>The ring has buffers again: re-arm the receive; returns whether it did (ring thread).</summary>
    bool RearmReceiveAfterBufferShortage();
}

/// <summary>
/// A ring's provided receive buffers and the count of those out of it: filled by the kernel and
/// not yet given back, because a connection's input still references them. Connections give
/// buffers back from the application's threads; the ring thread puts them back in the buffer ring
/// on its next turn, one tail store per batch, and re-arms the receives that waited for them.
/// </summary>
/// <remarks>
/// Who writes what: <see cref="_out"/> only the ring thread (others read it to decide whether to
/// wake the ring); <see cref="_returned"/> any thread enqueues, the ring thread dequeues;
/// <see cref="_waiting"/> and the buffer ring itself only the ring thread.
/// </remarks>
internal sealed class ReceiveBuffers : IDisposable
{
    private readonly BufferRing _ring;
    private readonly ReceiveBufferMemory[] _memory; // one per buffer, made once: pipe segments point at them
    private readonly ConcurrentQueue<int> _returned = new(); // ids the application is done with
    private readonly Queue<IReceiveBufferWaiter> _waiting = new(); // in the order their receives ran dry
    private readonly Thread _owner = Thread.CurrentThread; // made on the ring thread, which alone fills and refills the ring
    private int _out;

    public unsafe ReceiveBuffers(BufferRing ring)
    {
        _ring = ring;
        _memory = new ReceiveBufferMemory[ring.Count];
        for (int i = 0; i < _memory.Length; i++)
        {
            _memory[i] = new ReceiveBufferMemory(ring.GetBuffer((ushort)i), ring.BufferSize);
        }
    }

    /// <summary>The buffer group receives select from.</summary>
    public ushort GroupId => _ring.GroupId;

    public int Count => _ring.Count;

    /// <summary>Buffers filled by the kernel and not given back yet (any thread; exact on the ring thread).</summary>
    public int Out => Volatile.Read(ref _out);

    /// <summary>Receives that found no free buffer (ring thread writes; read for metrics and tests).</summary>
    public long Shortages { get; private set; }

    /// <summary>
    /// Whether receives should be copied out and their buffers given back at once: with a quarter
    /// or less of the buffers left, holding more would let slow readers starve every other
    /// connection of the ring (ring thread).
    /// </summary>
    public bool Scarce => _out > _ring.Count * 3 / 4;

    /// <summary>Whether buffers given back wait to go back into the ring.</summary>
    public bool HasReturns => !_returned.IsEmpty;

    /// <summary>Memory over buffer <paramref name="bufferId"/>, for pipe segments.</summary>
    public ReceiveBufferMemory Memory(ushort bufferId) => _memory[bufferId];

    /// <summary>The first <paramref name="length"/> bytes the kernel wrote into buffer <paramref name="bufferId"/>.</summary>
    public ReadOnlySpan<byte> GetSpan(ushort bufferId, int length) => _ring.GetSpan(bufferId, length);

    /// <summary>A completion carried a buffer: it is out until given back (ring thread).</summary>
    public void Taken()
    {
        Debug.Assert(Thread.CurrentThread == _owner, "ring thread only");
        _out++;
    }

    /// <summary>Gives a buffer straight back (ring thread).</summary>
    public void ReturnOnRing(ushort bufferId)
    {
        Debug.Assert(Thread.CurrentThread == _owner, "ring thread only");
        _ring.Return(bufferId);
        _out--;
    }

    /// <summary>
    /// The application advanced past these buffers (any thread; the ids are copied). Returns
    /// whether the ring should be woken for them: only when it may need them, that is when more
    /// than half are out (connections may be parked on ENOBUFS, or about to copy) or it is
    /// <paramref name="stopping"/> and waits for every buffer. Otherwise they ride along with the
    /// next wake-up, which under load is the response's send a moment later (perf/README.md).
    /// </summary>
    public bool Return(List<int> bufferIds, bool stopping)
    {
        foreach (int id in bufferIds)
        {
            _returned.Enqueue(id);
        }

        // Dekker pairing with the ring thread: the enqueue above is a full fence (ConcurrentQueue
        // uses Interlocked), and the ring thread stores _out, then fences (announcing its sleep),
        // then looks at this queue before sleeping; so either it sees these ids, or we see its _out.
        return stopping || Volatile.Read(ref _out) > _ring.Count / 2;
    }

    /// <summary>Puts what was given back into the buffer ring (ring thread); returns whether there was any.</summary>
    public bool DrainReturned()
    {
        Debug.Assert(Thread.CurrentThread == _owner, "ring thread only");
        int count = 0;
        while (_returned.TryDequeue(out int id))
        {
            _ring.Add((ushort)id, count++);
        }

        if (count == 0)
        {
            return false;
        }

        Debug.Assert(count <= _out, "more buffers came back than were out");
        _ring.Advance(count); // one tail store publishes the whole batch
        _out -= count;
        return true;
    }

    /// <summary>A connection's receive ended with ENOBUFS; it is re-armed once buffers come back (ring thread).</summary>
    public void WaitFor(IReceiveBufferWaiter waiter)
    {
        Debug.Assert(Thread.CurrentThread == _owner, "ring thread only");
        Shortages++;
        _waiting.Enqueue(waiter);
    }

    /// <summary>
    /// Re-arms waiting receives, first come first served, as many as there are free buffers (each
    /// takes at least one; more would only end in ENOBUFS again). While none is free, waiters stay
    /// parked until a return, so a dry ring never turns into a loop without progress (ring thread).
    /// </summary>
    public void RearmWaiting()
    {
        Debug.Assert(Thread.CurrentThread == _owner, "ring thread only");
        int free = _ring.Count - _out;
        while (free > 0 && _waiting.TryDequeue(out IReceiveBufferWaiter? waiter))
        {
            if (waiter.RearmReceiveAfterBufferShortage())
            {
                free--;
            }
        }
    }

    /// <summary>
    /// Unregisters and frees the buffers, unless some are still out: an application's unread input
    /// would point at freed memory, so a ring that ends that way (it failed, or its stop timed out)
    /// leaks them instead (ring thread, before the ring closes).
    /// </summary>
    public void Dispose()
    {
        if (_out == 0)
        {
            _ring.Dispose();
        }
    }
}
