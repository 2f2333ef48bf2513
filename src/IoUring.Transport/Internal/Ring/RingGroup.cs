using System;
using System.Threading;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// The rings of one transport factory, started with the first listener and stopped after the
/// last one is disposed. Connections live on the ring that accepted them (or that a Unix listener
/// handed them to) until they close.
/// </summary>
internal sealed class RingGroup : IDisposable
{
    private static readonly TimeSpan s_stopTimeout = TimeSpan.FromSeconds(30);
    private readonly ILogger _logger;
    private int _next = -1;

    private readonly TransportMetrics _metrics;

    private RingGroup(RingThread[] rings, RingPlacement? placement, ILogger logger)
    {
        Rings = rings;
        Placement = placement;
        _logger = logger;
        _metrics = new TransportMetrics(rings);
    }

    public RingThread[] Rings { get; }

    /// <summary>The kernel event loops' placement of connections by load; null where it cannot run (set up before any listener starts).</summary>
    public RingPlacement? Placement { get; }

    public PinnedBlockMemoryPool MemoryPool { get; } = new();

    /// <summary>Starts <see cref="IoUringTransportOptions.RingCount"/> rings; if one fails, stops those already running and rethrows.</summary>
    public static RingGroup Start(IoUringTransportOptions options, ILogger logger)
    {
        var rings = new RingThread[Math.Max(1, options.RingCount)];
        int started = 0;
        try
        {
            for (; started < rings.Length; started++)
            {
                rings[started] = new RingThread(started, options, logger);
                rings[started].Start();
            }
        }
        catch
        {
            for (int i = 0; i < started; i++)
            {
                rings[i].Stop(s_stopTimeout);
            }

            throw;
        }

        return new RingGroup(rings, RingPlacement.TryStart(rings, options), logger);
    }

    /// <summary>The next ring in turn, for listeners that spread connections themselves.</summary>
    public RingThread NextRing()
    {
        RingThread ring = Rings[0];
        for (int i = 0; i < Rings.Length; i++)
        {
            ring = Rings[(int)((uint)Interlocked.Increment(ref _next) % (uint)Rings.Length)];
            if (!ring.HasEnded)
            {
                return ring; // a failed ring would only reject what it is handed
            }
        }

        return ring;
    }

    /// <summary>Stops every ring once its connections are gone (all at once, within one bounded wait), then frees the pool and the meter.</summary>
    public void Dispose()
    {
        foreach (RingThread ring in Rings)
        {
            ring.RequestStop();
        }

        long deadline = Environment.TickCount64 + (long)s_stopTimeout.TotalMilliseconds;
        bool ended = true;
        foreach (RingThread ring in Rings)
        {
            if (!ring.WaitForExit(TimeSpan.FromMilliseconds(Math.Max(0, deadline - Environment.TickCount64))))
            {
                IoUringTransportLog.RingStopTimedOut(_logger, ring.Index);
                ended = false;
            }
        }

        Placement?.FreePages(ended); // the rings stored their loads into each other's pages until they ended

        _metrics.Dispose();
        MemoryPool.Dispose();
    }
}
