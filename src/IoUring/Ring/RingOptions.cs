namespace IoUring;

/// <summary>How to set up a <see cref="Ring"/>.</summary>
internal sealed class RingOptions
{
    /// <summary>Submission queue entries (rounded up to a power of two by the kernel). Defaults to 256.</summary>
    public uint SqEntries { get; set; } = 256;

    /// <summary>
    /// Completion queue entries; 0 lets the kernel pick twice <see cref="SqEntries"/>. A server with
    /// multishot requests gets many CQEs per SQE, so the transport asks for more. Defaults to 0.
    /// </summary>
    public uint CqEntries { get; set; }

    /// <summary>
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN: only the creating thread submits,
    /// and completion work runs only when that thread enters with GETEVENTS, in batches, instead of
    /// interrupting it. Falls back to COOP_TASKRUN when the kernel refuses. Defaults to true.
    /// </summary>
    public bool SingleIssuerDeferTaskRun { get; set; } = true;

    /// <summary>Create the ring disabled (IORING_SETUP_R_DISABLED) so another thread can enable and own it. Defaults to false.</summary>
    public bool StartDisabled { get; set; }
}
