using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Linq;
using System.Runtime;
using System.Text;

namespace BenchmarkApp;

/// <summary>
/// The transport's metrics (meter IoUring.Transport, summed over rings), the managed heap and the
/// count of methods the JIT has compiled, and the connections the HTTP ports accepted, as plain
/// text lines "name value": perf/soak.sh reads the first two, perf/run.sh the JIT count between
/// warm-up slices (never while it measures) and the connections before and after each measured
/// run. Served at /stats on the HTTP/1.1 port.
/// </summary>
internal sealed class TransportStats : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<(string Name, object? Ring), long> _values = new();

    public TransportStats()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "IoUring.Transport")
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            object? ring = null;
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                if (tag.Key == "ring")
                {
                    ring = tag.Value;
                }
            }

            _values[(instrument.Name, ring)] = value;
        });
        _listener.Start();
    }

    /// <summary>The current values; with <paramref name="collect"/>, after a full blocking GC so the heap size means something.</summary>
    public string Snapshot(bool collect)
    {
        if (collect)
        {
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }

        _listener.RecordObservableInstruments();
        var text = new StringBuilder();
        foreach (IGrouping<string, KeyValuePair<(string Name, object? Ring), long>> metric in _values.GroupBy(kv => kv.Key.Name).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            text.Append(CultureInfo.InvariantCulture, $"{metric.Key} {metric.Sum(kv => kv.Value)}\n");
            if (metric.Key == "iouring.connections.active")
            {
                // Per ring too ("name[ring] value"): how connection dispatch spread the connections.
                foreach (KeyValuePair<(string Name, object? Ring), long> ring in metric.OrderBy(kv => Convert.ToInt64(kv.Key.Ring, CultureInfo.InvariantCulture)))
                {
                    text.Append(CultureInfo.InvariantCulture, $"{metric.Key}[{ring.Key.Ring}] {ring.Value}\n");
                }
            }
        }

        text.Append(CultureInfo.InvariantCulture, $"gc.heap_bytes {GC.GetTotalMemory(forceFullCollection: false)}\n");
        GCMemoryInfo info = GC.GetGCMemoryInfo();
        text.Append(CultureInfo.InvariantCulture, $"gc.committed_bytes {info.TotalCommittedBytes}\n");

        // Where the committed memory is and what the collector has been doing, for comparing the two
        // transports' heaps under load: allocation volume, collections per generation, and per
        // generation (0, 1, 2, large objects, pinned objects) its size and fragmentation after the
        // last collection, and the pinned objects that collection found.
        text.Append(CultureInfo.InvariantCulture, $"gc.allocated_bytes {GC.GetTotalAllocatedBytes(precise: false)}\n");
        for (int generation = 0; generation <= GC.MaxGeneration; generation++)
        {
            text.Append(CultureInfo.InvariantCulture, $"gc.collections[{generation}] {GC.CollectionCount(generation)}\n");
        }

        ReadOnlySpan<GCGenerationInfo> generations = info.GenerationInfo;
        for (int generation = 0; generation < generations.Length; generation++)
        {
            text.Append(CultureInfo.InvariantCulture, $"gc.size_after[{generation}] {generations[generation].SizeAfterBytes}\n");
            text.Append(CultureInfo.InvariantCulture, $"gc.fragmentation_after[{generation}] {generations[generation].FragmentationAfterBytes}\n");
        }

        text.Append(CultureInfo.InvariantCulture, $"gc.pinned_objects {info.PinnedObjectsCount}\n");
        text.Append(CultureInfo.InvariantCulture, $"gc.promoted_bytes {info.PromotedBytes}\n");

        // Every compilation counts, tier-0 and the tier-1 recompilations that follow under load: while
        // it still grows the process is not in its steady state, and a measurement would mix code
        // generations (on one pinned core, tier-up under load can take tens of seconds).
        text.Append(CultureInfo.InvariantCulture, $"jit.compiled_methods {JitInfo.GetCompiledMethodCount(currentThread: false)}\n");
        text.Append(CultureInfo.InvariantCulture, $"app.connections_accepted {ConnectionCounter.Accepted}\n");
        return text.ToString();
    }

    public void Dispose() => _listener.Dispose();
}
