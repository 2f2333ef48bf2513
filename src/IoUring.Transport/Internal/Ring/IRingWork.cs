using System;

namespace IoUring.Transport.Internal;

/// <summary>Work another thread hands to a ring thread; <see cref="Execute"/> runs on the ring thread.</summary>
internal interface IRingWork
{
    void Execute(RingThread ring, int operation);

    /// <summary>
    /// The ring thread died before it could run the work: undo whatever waits on it (any thread,
    /// never concurrently with <see cref="Execute"/> for the same item, each item once).
    /// </summary>
    void Reject(int operation, Exception error);
}
