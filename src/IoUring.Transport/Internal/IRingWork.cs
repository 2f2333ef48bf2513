namespace IoUring.Transport.Internal;

/// <summary>Work another thread hands to a ring thread; <see cref="Execute"/> runs on the ring thread.</summary>
internal interface IRingWork
{
    void Execute(RingThread ring, int operation);
}
