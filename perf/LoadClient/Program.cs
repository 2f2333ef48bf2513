using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Linq;
using System.Net.WebSockets;
using System.Threading;
using System.Threading.Tasks;

// A WebSocket load generator for perf/run.sh: <connections> connections to a server that echoes
// every message, each sending one binary message of <size> bytes, waiting for the whole echo, and
// sending the next, for <seconds> seconds. Counting starts once every connection is open.
//
//   LoadClient --url ws://127.0.0.1:5100/ws --connections 16 --size 64 --seconds 8
//
// Prints "key=value" lines (perf/report.py reads them): messages echoed, the measured seconds,
// messages per second, the round-trip time of a message at p50/p90/p99/p99.9 in milliseconds
// (every message is timed; nearest rank), and errors (connections that failed, echoes of the wrong
// length). Exits 1 if a connection could not be opened. perf/run.sh pins it to the load generator's
// core and sets DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1 (completions on the epoll thread).
var options = new Dictionary<string, string>(StringComparer.Ordinal);
for (int i = 0; i + 1 < args.Length; i += 2)
{
    options[args[i].TrimStart('-')] = args[i + 1];
}

var url = new Uri(options.GetValueOrDefault("url", "ws://127.0.0.1:5100/ws"));
int connections = int.Parse(options.GetValueOrDefault("connections", "16"), CultureInfo.InvariantCulture);
int size = int.Parse(options.GetValueOrDefault("size", "64"), CultureInfo.InvariantCulture);
double seconds = double.Parse(options.GetValueOrDefault("seconds", "8"), CultureInfo.InvariantCulture);

var sockets = new ClientWebSocket[connections];
try
{
    await Task.WhenAll(Enumerable.Range(0, connections).Select(async i =>
    {
        var socket = new ClientWebSocket();
        // No keep-alive frames: they would be traffic the server answers besides the echoes.
        socket.Options.KeepAliveInterval = TimeSpan.Zero;
        await socket.ConnectAsync(url, CancellationToken.None);
        sockets[i] = socket;
    }));
}
catch (Exception e) when (e is WebSocketException or System.Net.Http.HttpRequestException)
{
    Console.WriteLine($"error=could not open {connections} connections to {url}: {e.Message}");
    return 1;
}

var loops = new EchoLoop[connections];
long start = Stopwatch.GetTimestamp();
long end = start + (long)(seconds * Stopwatch.Frequency);
for (int i = 0; i < connections; i++)
{
    loops[i] = new EchoLoop(sockets[i], size, (int)Math.Min(seconds * 100_000, 4_000_000));
}

await Task.WhenAll(loops.Select(loop => loop.RunAsync(end)));
double measured = Stopwatch.GetElapsedTime(start).TotalSeconds;

// Close handshakes after the measurement, bounded: a server that stopped answering must not hang the run.
using (var closing = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
{
    await Task.WhenAll(sockets.Where(s => s.State == WebSocketState.Open).Select(async s =>
    {
        try
        {
            await s.CloseAsync(WebSocketCloseStatus.NormalClosure, null, closing.Token);
        }
        catch (Exception e) when (e is WebSocketException or OperationCanceledException)
        {
            s.Abort();
        }
    }));
}

long[] times = loops.SelectMany(loop => loop.Times).ToArray();
Array.Sort(times);
int errors = loops.Sum(loop => loop.Errors);
Console.WriteLine($"loadclient=websocket-echo url={url} connections={connections} size={size}");
Console.WriteLine($"messages={times.Length}");
Console.WriteLine(FormattableString.Invariant($"seconds={measured:F3}"));
Console.WriteLine(FormattableString.Invariant($"messages_per_s={times.Length / measured:F1}"));
foreach ((string name, double p) in new[] { ("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9) })
{
    Console.WriteLine(FormattableString.Invariant($"{name}_ms={Percentile(times, p) * 1000.0 / Stopwatch.Frequency:F4}"));
}

Console.WriteLine($"errors={errors}");
foreach (string message in loops.Select(loop => loop.FirstError).OfType<string>().Distinct().Take(3))
{
    Console.WriteLine($"error={message}");
}

return 0;

// Nearest rank, as perf/report.py computes h2load's percentiles.
static long Percentile(long[] sorted, double p)
{
    if (sorted.Length == 0)
    {
        return 0;
    }

    int rank = Math.Max(1, (int)Math.Round(p / 100 * sorted.Length + 0.5, MidpointRounding.AwayFromZero));
    return sorted[Math.Min(rank, sorted.Length) - 1];
}

/// <summary>One connection's loop: send, receive the whole echo, time it, again until the end.</summary>
internal sealed class EchoLoop(ClientWebSocket socket, int size, int expectedMessages)
{
    private readonly byte[] _message = Enumerable.Range(0, size).Select(i => (byte)('a' + (i % 26))).ToArray();

    // One byte more than a message, so an echo that is too long shows as one.
    private readonly byte[] _echo = new byte[size + 1];

    /// <summary>Round-trip times in Stopwatch ticks, one per echoed message.</summary>
    public List<long> Times { get; } = new(expectedMessages);

    public int Errors { get; private set; }

    public string? FirstError { get; private set; }

    public async Task RunAsync(long end)
    {
        try
        {
            while (Stopwatch.GetTimestamp() < end)
            {
                long sent = Stopwatch.GetTimestamp();
                await socket.SendAsync(_message, WebSocketMessageType.Binary, endOfMessage: true, CancellationToken.None);
                int length = 0;
                ValueWebSocketReceiveResult received;
                do
                {
                    received = await socket.ReceiveAsync(_echo.AsMemory(length), CancellationToken.None);
                    length += received.Count;
                }
                while (!received.EndOfMessage && length < _echo.Length);

                if (received.MessageType == WebSocketMessageType.Close || length != size || !received.EndOfMessage)
                {
                    Fail($"echo of {length} bytes ({received.MessageType}, end of message {received.EndOfMessage}) for {size}");
                    return;
                }

                Times.Add(Stopwatch.GetTimestamp() - sent);
            }
        }
        catch (WebSocketException e)
        {
            Fail(e.Message);
        }
    }

    private void Fail(string message)
    {
        Errors++;
        FirstError ??= message;
    }
}
