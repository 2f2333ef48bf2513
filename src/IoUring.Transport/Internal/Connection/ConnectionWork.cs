namespace IoUring.Transport.Internal;

/// <summary>
/// What other threads ask of a connection's ring thread (<see cref="RingThread.Post"/>). Not to be
/// confused with <see cref="OpKind"/>, which names the connection's requests in the kernel.
/// </summary>
internal enum ConnectionWork
{
    /// <summary>Act on the shutdown that was decided: FIN, or RST for an abort.</summary>
    Shutdown = 1,

    /// <summary>Both halves have ended: close the descriptor and free the slot once nothing is in flight.</summary>
    Close,

    /// <summary>The application consumed down to half of MaxReadBufferSize: receive again.</summary>
    ResumeReceive,

    /// <summary>The send loop filled the send state: submit it.</summary>
    Send,

    /// <summary>The application completed Transport.Input: receive nothing more.</summary>
    InputCompleted,

    /// <summary>
    /// The application flushed or completed its output while the send in flight may be held in
    /// the kernel: hold it no longer (the post's wake ends the kernel's sleep).
    /// </summary>
    OutputFlushed,
}
