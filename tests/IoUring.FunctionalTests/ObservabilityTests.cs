using System;
using System.Collections.Generic;
using System.IO.Pipelines;
using System.Linq;
using System.Net.Http;
using System.Threading.Tasks;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>What the transport tells operators: FIN and RST reasons, resets not logged as errors, metrics per ring.</summary>
/// <remarks>In the isolated collection, as before the split: one of them counts the process's descriptors and threads.</remarks>
[Collection(IsolatedCollection.Name)]
public class ObservabilityTests
{
    [Fact]
    public async Task FinAndResetAreLoggedWithTheirReasonAtDebug()
    {
        var logs = new CapturingLoggerProvider();
        var ends = new System.Collections.Concurrent.ConcurrentDictionary<string, TaskCompletionSource>();
        logs.Logged += entry =>
        {
            if (entry.EventId.Name is "ConnectionWriteFin" or "ConnectionWriteRst")
            {
                ends.GetOrAdd(entry.EventId.Name, _ => new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
            }
        };
        await using IoUringServer server = await IoUringServer.StartAsync(
            _ => { },
            listen => listen.Run(async connection =>
                {
                    ReadResult result = await connection.Transport.Input.ReadAsync();
                    bool abort = result.Buffer.FirstSpan[0] == (byte)'a';
                    connection.Transport.Input.AdvanceTo(result.Buffer.End);
                    if (abort)
                    {
                        connection.Abort(new ConnectionAbortedException("test abort"));
                    }
                }),
            logs: logs,
            minimumLevel: LogLevel.Debug);
        int port = server.Port;
        foreach ((string first, string eventName) in new[] { ("a", "ConnectionWriteRst"), ("f", "ConnectionWriteFin") })
        {
            using RawConnection connection = await RawConnection.ConnectAsync(port);
            await connection.SendAsync(first);
            await ends.GetOrAdd(eventName, _ => new(TaskCreationOptions.RunContinuationsAsynchronously)).Task.DefaultTimeout();
        }

        var rst = Assert.Single(logs.Entries, e => e.EventId.Name == "ConnectionWriteRst");
        Assert.Equal(LogLevel.Debug, rst.Level);
        Assert.Contains("test abort", rst.Message, StringComparison.Ordinal);
        Assert.Equal(LogLevel.Debug, Assert.Single(logs.Entries, e => e.EventId.Name == "ConnectionWriteFin").Level);
    }

    [Fact]
    public async Task ClientResetsAreNotLoggedAsErrors()
    {
        var logs = new CapturingLoggerProvider();
        await using var server = await TestServer.StartAsync(
            app => app.Run(async context =>
            {
                var chunk = new byte[64 * 1024];
                for (int i = 0; i < 64; i++)
                {
                    await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
                }
            }),
            configureServices: services => services.AddSingleton<ILoggerProvider>(logs));
        await Task.WhenAll(Enumerable.Range(0, 50).Select(async _ =>
        {
            using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            await connection.ReceiveAsync(new byte[1000]);
            connection.Reset(); // mid-response
        }));

        using (HttpClient client = server.CreateClient())
        {
            // Still serving; and by now every reset connection has ended on the server.
            Assert.Equal(64 * 64 * 1024, (await client.GetByteArrayAsync("/", TestContext.Current.CancellationToken)).Length);
        }

        await server.DisposeAsync();
        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Error);
    }

    [Fact]
    public async Task MetricsReportConnectionsBytesAndRingActivityPerRing()
    {
        var values = new System.Collections.Concurrent.ConcurrentDictionary<(string Name, int Ring), long>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "IoUring.Transport")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "ring")
                {
                    values[(instrument.Name, (int)tag.Value!)] = value;
                }
            }
        });
        listener.Start();

        var openConnections = new List<RawConnection>();
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            context.Response.ContentLength = 1000;
            await context.Response.Body.WriteAsync(new byte[1000]);
        }));
        try
        {
            for (int i = 0; i < 10; i++)
            {
                RawConnection connection = await RawConnection.ConnectAsync(server.Port);
                openConnections.Add(connection);
                await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                // Read the whole response (headers, then a 1000-byte body); the connection stays open.
                var response = new List<byte>();
                var buffer = new byte[4096];
                int headerEnd;
                while ((headerEnd = IndexOfHeaderEnd(response)) < 0 || response.Count < headerEnd + 1000)
                {
                    int n = await connection.ReceiveAsync(buffer);
                    Assert.True(n > 0);
                    response.AddRange(buffer.AsSpan(0, n).ToArray());
                }
            }

            RingThread[] ringThreads = IoUringServer.FactoryOf(server.Services).Group!.Rings;
            int rings = ringThreads.Length;
            long Sum(string name) => Enumerable.Range(0, rings).Sum(r => values.GetValueOrDefault((name, r)));
            if (ringThreads.Any(r => r.HoldsSendCompletions))
            {
                // A kernel event loop may hold each idle connection's last send completion until
                // the ring's next return (docs/design.md, "Completions that wait"); the bytes are
                // counted when the ring thread takes it. A wake brings the held ones back.
                foreach (RingThread ring in ringThreads)
                {
                    ring.Post(new KernelEventLoopDeferralTests.NoWork(), 0);
                }

                await TestWait.UntilAsync(
                    () => { listener.RecordObservableInstruments(); return Sum("iouring.bytes.sent") >= 10 * 1000; },
                    () => $"after a wake the rings counted {Sum("iouring.bytes.sent")} bytes sent");
            }

            listener.RecordObservableInstruments();
            Assert.Equal(10, Sum("iouring.connections.active"));
            Assert.Equal(10, Sum("iouring.connections.accepted"));
            Assert.True(Sum("iouring.bytes.received") >= 10 * "GET / HTTP/1.1\r\nHost: x\r\n\r\n".Length);
            Assert.True(Sum("iouring.bytes.sent") >= 10 * 1000);
            Assert.True(Sum("iouring.enters") > 0);
            Assert.True(Sum("iouring.submissions") > 0);
            Assert.True(Sum("iouring.completions") >= Sum("iouring.connections.accepted"));
            Assert.True(values.ContainsKey(("iouring.buffers.in_use", 0)));
            Assert.True(values.ContainsKey(("iouring.buffers.exhausted", 0)));
        }
        finally
        {
            foreach (RawConnection connection in openConnections)
            {
                connection.Dispose();
            }
        }
    }

    private static int IndexOfHeaderEnd(List<byte> data)
    {
        int i = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(data).IndexOf("\r\n\r\n"u8);
        return i < 0 ? -1 : i + 4;
    }
}
