using System.Collections.Generic;
using System.Diagnostics.Metrics;

namespace IoUring.Transport.Internal;

/// <summary>
/// The transport's metrics under the meter <c>IoUring.Transport</c> (watch them with
/// <c>dotnet-counters monitor -n &lt;process&gt; --counters IoUring.Transport</c>). Every instrument
/// is observable: the ring threads only bump plain fields of their own, and the values are read
/// when a listener collects, so the hot paths pay no more than an increment.
/// </summary>
internal sealed class TransportMetrics : System.IDisposable
{
    public const string MeterName = "IoUring.Transport";

    private readonly Meter _meter = new(MeterName);

    public TransportMetrics(RingThread[] rings)
    {
        _meter.CreateObservableGauge("iouring.connections.active", () => PerRing(rings, r => r.ActiveConnections), "{connection}", "Open connections, per ring.");
        _meter.CreateObservableCounter("iouring.connections.accepted", () => PerRing(rings, r => r.ConnectionsAccepted), "{connection}", "Connections accepted, per ring.");
        _meter.CreateObservableCounter("iouring.connections.connected", () => PerRing(rings, r => r.ConnectionsConnected), "{connection}", "Connections the ring connected for IoUringConnectionFactory, per ring.");
        _meter.CreateObservableCounter("iouring.bytes.received", () => PerRing(rings, r => r.BytesReceived), "By", "Bytes received, per ring.");
        _meter.CreateObservableCounter("iouring.bytes.sent", () => PerRing(rings, r => r.BytesSent), "By", "Bytes sent, per ring.");
        _meter.CreateObservableCounter("iouring.enters", () => PerRing(rings, r => r.Enters), "{call}", "io_uring_enter system calls, per ring.");
        _meter.CreateObservableCounter("iouring.submissions", () => PerRing(rings, r => r.Submissions), "{sqe}", "SQEs submitted, per ring (divide by iouring.enters for SQEs per call).");
        _meter.CreateObservableCounter("iouring.completions", () => PerRing(rings, r => r.Completions), "{cqe}", "CQEs handled, per ring (divide by iouring.enters for CQEs per call).");
        _meter.CreateObservableGauge("iouring.buffers.in_use", () => PerRing(rings, r => r.BuffersInUse), "{buffer}", "Provided receive buffers filled by the kernel and not yet given back, per ring.");
        _meter.CreateObservableCounter("iouring.buffers.exhausted", () => PerRing(rings, r => r.BufferShortages), "{event}", "Receives that found the ring's buffers all in use (ENOBUFS), per ring.");
        _meter.CreateObservableCounter("iouring.kernel_loop.deferred", () => PerRing(rings, r => r.KernelEventLoopDeferred), "{cqe}", "Completions the kernel event loop held in the kernel for a later return, per ring (0 without it).");
        _meter.CreateObservableCounter("iouring.kernel_loop.placed", () => PerRing(rings, r => r.KernelEventLoopPlaced), "{connection}", "Accepted connections the kernel event loop handed to a less loaded ring, per ring (a hand-over that failed, logged as ConnectionHandoverFailed, counts too; 0 without it).");
        _meter.CreateObservableCounter("iouring.kernel_loop.armed", () => PerRing(rings, r => r.KernelEventLoopArmed), "{receive}", "New connections' first receives the kernel event loop armed at their accept, per ring (0 without it).");
    }

    public void Dispose() => _meter.Dispose();

    private static IEnumerable<Measurement<long>> PerRing(RingThread[] rings, System.Func<RingThread, long> read)
    {
        foreach (RingThread ring in rings)
        {
            yield return new Measurement<long>(read(ring), new KeyValuePair<string, object?>("ring", ring.Index));
        }
    }
}
