using System.Collections.Concurrent;
using System.Threading;

namespace IoUring.Transport.Internal;

/// <summary>
/// What tests inject and inspect where the kernel cannot be made to misbehave on demand, given
/// through <see cref="IoUringTransportOptions.TestHooks"/>. Null in use: the paths that consult it
/// test one reference.
/// </summary>
internal sealed class TransportTestHooks
{
    /// <summary>What a send of one segment hands the kernel at most under <see cref="ShortSends"/>.</summary>
    public const int ShortSendBytes = 1000;

    private volatile bool _failSendSubmissions;
    private volatile bool _shortSends;
    private int _failConnectionSetups;

    /// <summary>Send submissions fail as if the ring could not take an SQE.</summary>
    public bool FailSendSubmissions
    {
        get => _failSendSubmissions;
        set => _failSendSubmissions = value;
    }

    /// <summary>
    /// Every send hands the kernel only part of what it has, at most <see cref="ShortSendBytes"/>
    /// of one segment or the first iovec of a sendmsg, so the partial sends a full socket causes
    /// now and then happen on every send.
    /// </summary>
    public bool ShortSends
    {
        get => _shortSends;
        set => _shortSends = value;
    }

    /// <summary>
    /// The kernel event loop's bound on completions ready before a waiting enter returns
    /// (RingKernelLoop.HoldMax), in place of its default; 0 holds nothing. Read when a ring attaches
    /// the loop.
    /// </summary>
    public int? KernelEventLoopHoldMax { get; set; }

    /// <summary>
    /// The slots a ring keeps reserved for receives the kernel event loop arms at accept, in place
    /// of its default (8); 0 arms none, as before. At most RingKernelLoop.ArmSlots. Read when a ring
    /// attaches the loop.
    /// </summary>
    public int? KernelEventLoopArmReserve { get; set; }

    /// <summary>
    /// False: the kernel event loops place no connections (RingPlacement), and listeners with one
    /// listening socket deal their connections to the rings in turn, as without the loop. Read when
    /// the rings start.
    /// </summary>
    public bool? KernelEventLoopPlacement { get; set; }

    /// <summary>
    /// The placement margin (RingPlacement.DefaultMargin otherwise): a ring hands a connection over
    /// only when its load exceeds the least loaded ring's by more than this. Read when the rings start;
    /// RingThread.SetPlaceMargin changes it on a running ring.
    /// </summary>
    public uint? KernelEventLoopPlaceMargin { get; set; }

    /// <summary>
    /// Each ring's kernel event loop is given -1 for every ring's descriptor, so every hand-over's
    /// MSG_RING fails (EBADF) and the accepting ring serves the connection itself. Read when the rings start.
    /// </summary>
    public bool KernelEventLoopPlaceBrokenTargets { get; set; }

    /// <summary>
    /// Connections arm their receives with IORING_RECVSEND_POLL_FIRST: the kernel waits for the
    /// socket's readiness before its first attempt, so data and an end that are both there when
    /// the receive is armed are taken from one wake-up, the order that loses the end of a
    /// multishot receive on AF_UNIX (IoUringConnection.Receive.cs) and otherwise needs a race.
    /// Read when a connection starts.
    /// </summary>
    public bool ReceivePollFirst { get; set; }

    /// <summary>
    /// The next this many accepted connections fail their setup (as if reading their addresses
    /// threw): the listener closes the descriptor, and gives up a receive the kernel armed for it.
    /// </summary>
    public int FailConnectionSetups
    {
        get => Volatile.Read(ref _failConnectionSetups);
        set => Volatile.Write(ref _failConnectionSetups, value);
    }

    /// <summary>Takes one of <see cref="FailConnectionSetups"/> (ring thread).</summary>
    internal bool TakeConnectionSetupFailure() => Volatile.Read(ref _failConnectionSetups) > 0 && Interlocked.Decrement(ref _failConnectionSetups) >= 0;

    /// <summary>The BPF programs and maps connection dispatch created, by kind and kernel id.</summary>
    public ConcurrentBag<(string Kind, uint Id)> CreatedBpfObjects { get; } = [];
}
