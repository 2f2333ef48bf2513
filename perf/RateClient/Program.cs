using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

// A constant-rate HTTP/1.1 load generator for perf/rate.sh: <connections> keep-alive connections,
// requests due at a fixed rate (request i at start + i / rate, whatever happened to the ones before),
// each sent on a connection that has no request outstanding. A request's latency runs from when it
// was due, not from when it could be sent: when the server stalls, the requests that pile up behind
// the stall are charged with it, as a user who keeps clicking would be. A closed-loop generator
// (wrk, h2load) instead stops sending during a stall, so the stall is one slow request among many
// fast ones (coordinated omission).
//
//   RateClient --port 5100 --path /plaintext --connections 16 --rate 20000 --seconds 15 --warmup 3
//
// One thread drives every connection: non-blocking sockets and ppoll(2) with a nanosecond timeout
// until the next request is due (timer slack 1 µs for this thread, prctl PR_SET_TIMERSLACK), so the
// client adds no thread scheduling of its own to what it measures. Prints "key=value" lines:
// requests (measured), seconds, rate achieved, latency at p50/p90/p99/p99.9/p99.99/max in ms, the
// largest backlog of due requests, errors; and with --percentiles <file> the whole distribution
// (percentile, latency in ms) for the chart (perf/rate_report.py). Latencies of the warm-up seconds
// are not counted.
var options = new Dictionary<string, string>(StringComparer.Ordinal);
for (int i = 0; i + 1 < args.Length; i += 2)
{
    options[args[i].TrimStart('-')] = args[i + 1];
}

string host = options.GetValueOrDefault("host", "127.0.0.1");
int port = int.Parse(options.GetValueOrDefault("port", "5100"), CultureInfo.InvariantCulture);
string path = options.GetValueOrDefault("path", "/plaintext");
int connections = int.Parse(options.GetValueOrDefault("connections", "16"), CultureInfo.InvariantCulture);
double rate = double.Parse(options.GetValueOrDefault("rate", "10000"), CultureInfo.InvariantCulture);
double seconds = double.Parse(options.GetValueOrDefault("seconds", "10"), CultureInfo.InvariantCulture);
double warmup = double.Parse(options.GetValueOrDefault("warmup", "2"), CultureInfo.InvariantCulture);
string? percentilesFile = options.GetValueOrDefault("percentiles");

Native.SetTimerSlack(1000);
byte[] request = Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
var conns = new Conn[connections];
try
{
    for (int i = 0; i < connections; i++)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Connect(new IPEndPoint(IPAddress.Parse(host), port));
        socket.Blocking = false;
        conns[i] = new Conn(socket);
    }
}
catch (SocketException e)
{
    Console.WriteLine($"error=could not open {connections} connections to {host}:{port}: {e.Message}");
    return 1;
}

long freq = Stopwatch.Frequency;
long start = Stopwatch.GetTimestamp();
long measureFrom = start + (long)(warmup * freq);
long total = (long)(rate * (warmup + seconds));
long end = start + (long)((warmup + seconds) * freq);
var latencies = new List<long>((int)Math.Min(rate * seconds + 16, 50_000_000));
var idle = new Stack<int>(connections);
for (int i = connections - 1; i >= 0; i--)
{
    idle.Push(i);
}

long next = 0;          // the next request to send (index into the schedule)
long completed = 0;
long errors = 0;
long maxBacklog = 0;
var pollFds = new Native.PollFd[connections];
var busy = new int[connections];
long Due(long index) => start + (long)(index * freq / rate);

while (completed < total && Stopwatch.GetTimestamp() < end + 5 * freq)
{
    long now = Stopwatch.GetTimestamp();
    // Send every request that is due, as long as a connection is free; the rest wait, their clock running.
    while (next < total && Due(next) <= now && idle.Count > 0)
    {
        Conn c = conns[idle.Pop()];
        c.Due = Due(next++);
        if (!c.Send(request))
        {
            errors++; // the connection is lost: it stays out of the idle set, the request counts as done
            c.Due = 0;
            completed++;
        }
    }

    long backlog = 0;
    for (long k = next; k < total && Due(k) <= now; k++)
    {
        backlog++;
        if (backlog > connections * 64L)
        {
            break;
        }
    }

    maxBacklog = Math.Max(maxBacklog, backlog);
    int n = 0;
    for (int i = 0; i < connections; i++)
    {
        if (conns[i].Due != 0)
        {
            pollFds[n] = new Native.PollFd { Fd = (int)conns[i].Socket.Handle, Events = Native.PollIn };
            busy[n++] = i;
        }
    }

    // Sleep until a response arrives or the next request is due (at once if one is due and waits for a connection).
    long waitTicks = next < total ? Math.Max(0, Due(next) - Stopwatch.GetTimestamp()) : freq / 100;
    if (backlog > 0)
    {
        waitTicks = n == connections ? freq / 100 : 0;
    }

    int ready = Native.Poll(pollFds, n, waitTicks * 1_000_000_000 / freq);
    if (ready <= 0)
    {
        continue;
    }

    long received = Stopwatch.GetTimestamp();
    for (int j = 0; j < n; j++)
    {
        if ((pollFds[j].Revents & (Native.PollIn | Native.PollErr | Native.PollHup)) == 0)
        {
            continue;
        }

        int i = busy[j];
        Conn c = conns[i];
        switch (c.Receive())
        {
            case Conn.Result.Complete:
                if (c.Due >= measureFrom)
                {
                    latencies.Add(received - c.Due);
                }

                c.Due = 0;
                completed++;
                idle.Push(i);
                break;
            case Conn.Result.Failed:
                errors++;
                c.Due = 0;
                completed++;
                break; // the connection is lost: not returned to the idle set
        }
    }
}

double measured = Math.Min(seconds, Stopwatch.GetElapsedTime(measureFrom).TotalSeconds);
latencies.Sort();
double Ms(long ticks) => ticks * 1000.0 / freq;
double At(double p) => latencies.Count == 0 ? 0 : Ms(latencies[Math.Min(latencies.Count - 1, (int)Math.Ceiling(p / 100 * latencies.Count) - 1)]);
var inv = CultureInfo.InvariantCulture;
Console.WriteLine($"requests={latencies.Count}");
Console.WriteLine(string.Create(inv, $"seconds={measured:F3}"));
Console.WriteLine(string.Create(inv, $"rate_target={rate:F0}"));
Console.WriteLine(string.Create(inv, $"rate={latencies.Count / measured:F1}"));
foreach (var (name, p) in new[] { ("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9), ("p9999", 99.99) })
{
    Console.WriteLine(string.Create(inv, $"{name}_ms={At(p):F3}"));
}

Console.WriteLine(string.Create(inv, $"max_ms={(latencies.Count == 0 ? 0 : Ms(latencies[^1])):F3}"));
Console.WriteLine($"max_backlog={maxBacklog}");
Console.WriteLine($"errors={errors + (total - completed)}");
if (percentilesFile is not null)
{
    using var writer = new StreamWriter(percentilesFile);
    writer.WriteLine("percentile\tlatency_ms");
    // Evenly spaced in log(1 / (1 - p)): as many points between 99 and 99.9 as between 90 and 99.
    for (double x = 0.30103; x <= 5.0001; x += 0.025)
    {
        double p = 100 * (1 - Math.Pow(10, -x));
        writer.WriteLine(string.Create(inv, $"{p:F4}\t{At(p):F4}"));
    }
}

return 0;

internal sealed class Conn(Socket socket)
{
    private readonly byte[] _buffer = new byte[16384];
    private int _filled;

    public enum Result { Partial, Complete, Failed }

    public Socket Socket { get; } = socket;

    /// <summary>When the outstanding request was due (Stopwatch ticks); 0 when none is outstanding.</summary>
    public long Due { get; set; }

    public bool Send(byte[] request)
    {
        try
        {
            return Socket.Send(request) == request.Length; // a few dozen bytes into an empty socket buffer
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Reads what arrived; Complete once a whole response (headers and Content-Length body) is in.</summary>
    public Result Receive()
    {
        int read;
        try
        {
            read = Socket.Receive(_buffer, _filled, _buffer.Length - _filled, SocketFlags.None);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
        {
            return Result.Partial;
        }
        catch (SocketException)
        {
            return Result.Failed;
        }

        if (read == 0)
        {
            return Result.Failed;
        }

        _filled += read;
        ReadOnlySpan<byte> data = _buffer.AsSpan(0, _filled);
        int headerEnd = data.IndexOf("\r\n\r\n"u8);
        if (headerEnd < 0)
        {
            return _filled == _buffer.Length ? Result.Failed : Result.Partial;
        }

        int length = ContentLength(data[..headerEnd]);
        int whole = headerEnd + 4 + length;
        if (length < 0 || whole > _buffer.Length)
        {
            return Result.Failed;
        }

        if (_filled < whole)
        {
            return Result.Partial;
        }

        // One request outstanding per connection, so nothing follows the response.
        _filled = 0;
        return Result.Complete;
    }

    private static int ContentLength(ReadOnlySpan<byte> headers)
    {
        ReadOnlySpan<byte> name = "\r\ncontent-length:"u8;
        for (int i = 0; i + name.Length <= headers.Length; i++)
        {
            if (Ascii.EqualsIgnoreCase(headers.Slice(i, name.Length), name))
            {
                ReadOnlySpan<byte> rest = headers[(i + name.Length)..];
                int lineEnd = rest.IndexOf("\r\n"u8);
                return int.TryParse(Encoding.ASCII.GetString(lineEnd < 0 ? rest : rest[..lineEnd]).Trim(), CultureInfo.InvariantCulture, out int value) ? value : -1;
            }
        }

        return -1;
    }
}

internal static unsafe partial class Native
{
    public const short PollIn = 0x001;
    public const short PollErr = 0x008;
    public const short PollHup = 0x010;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "ppoll", SetLastError = true)]
    private static partial int PPoll(PollFd* fds, nuint count, Timespec* timeout, void* sigmask);

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    private static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    /// <summary>PR_SET_TIMERSLACK: this thread's timers fire within <paramref name="nanoseconds"/> of when asked (default 50 µs).</summary>
    public static void SetTimerSlack(ulong nanoseconds) => Prctl(29, (nuint)nanoseconds, 0, 0, 0);

    /// <summary>ppoll(2) over the first <paramref name="count"/> entries, waiting at most <paramref name="timeoutNs"/>.</summary>
    public static int Poll(PollFd[] fds, int count, long timeoutNs)
    {
        var ts = new Timespec { Seconds = timeoutNs / 1_000_000_000, Nanoseconds = timeoutNs % 1_000_000_000 };
        fixed (PollFd* p = fds)
        {
            return PPoll(p, (nuint)count, &ts, null);
        }
    }
}
