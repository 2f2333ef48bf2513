using System;
using IoUring.Interop;

namespace IoUring.Transport.Internal;

/// <summary>
/// Owner of a ring slot: receives the completions whose <c>user_data</c> names its slot and
/// generation, and is told when its own handling failed or the whole ring did. All three run on
/// the ring thread.
/// </summary>
internal interface IRingCompletionHandler
{
    void OnCompletion(RingThread ring, OpKind kind, in Cqe cqe);

    /// <summary>
    /// Handling one of this owner's completions or posted work threw (a bug, or a ring that could
    /// not take an SQE): contain it to this owner, without relying on ring operations that may
    /// have been lost. The ring goes on serving everyone else.
    /// </summary>
    void OnFault(Exception error);

    /// <summary>
    /// The ring's loop failed and will not turn again (the ring thread, in its last moments): end
    /// without the ring, closing what the kernel would otherwise keep.
    /// </summary>
    void OnRingFailed(Exception error);
}
