using IoUring.Interop;

namespace IoUring.Transport.Internal;

/// <summary>Owner of a ring slot: receives the completions whose <c>user_data</c> names its slot and generation.</summary>
internal interface IRingCompletionHandler
{
    void OnCompletion(RingThread ring, OpKind kind, in Cqe cqe);
}
