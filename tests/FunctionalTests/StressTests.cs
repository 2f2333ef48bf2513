using System;
using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipelines;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Connections;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// A seeded random mix of connection-level traffic for a bounded time: echoes of random sizes in
/// random chunks, half-closes, client resets mid-stream, and server aborts after a random number of
/// bytes. Every byte that should arrive does, in order; bytes before an abort or reset arrive as a
/// prefix. STRESS_SEED replays a run; STRESS_SECONDS changes its length (default 10).
/// </summary>
public class StressTests
{
    private const byte Echo = (byte)'E';        // echo until the client's FIN, then FIN
    private const byte AbortAfter = (byte)'A';  // echo the given number of bytes, then Abort (RST)

    [Fact]
    public async Task RandomEchoHalfCloseResetAndAbortTrafficDeliversEveryByteInOrder()
    {
        await using var server = await TestServer.StartAsync(_ => { }, kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Run(ServeAsync)));
        // Clients that reset, and the server's own aborts: the echo handler lets them through, and Kestrel logs them.
        server.ExpectServerErrors(message =>
            message.Contains(nameof(Microsoft.AspNetCore.Connections.ConnectionResetException), StringComparison.Ordinal)
            || message.Contains(nameof(Microsoft.AspNetCore.Connections.ConnectionAbortedException), StringComparison.Ordinal));
        await RunAsync(server.Port, TransportSelector.Name, seconds: 10);
    }

    /// <summary>
    /// Runs the random traffic against a server whose connections run <see cref="ServeAsync"/>
    /// (STRESS_SEED and STRESS_SECONDS override the seed and <paramref name="seconds"/>), then
    /// checks it still serves.
    /// </summary>
    internal static async Task RunAsync(int port, string name, double seconds)
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("STRESS_SEED"), NumberStyles.Integer, CultureInfo.InvariantCulture, out int s)
            ? s : Random.Shared.Next();
        if (double.TryParse(Environment.GetEnvironmentVariable("STRESS_SECONDS"), NumberStyles.Float, CultureInfo.InvariantCulture, out double d))
        {
            seconds = d;
        }

        var failures = new ConcurrentQueue<string>();
        var counts = new int[5];
        var deadline = Stopwatch.StartNew();
        var workers = new Task[32];
        for (int w = 0; w < workers.Length; w++)
        {
            var random = new Random(seed + w); // each worker's sequence depends only on the seed
            int worker = w;
            workers[w] = Task.Run(async () =>
            {
                for (int iteration = 0; deadline.Elapsed.TotalSeconds < seconds; iteration++)
                {
                    int kind = random.Next(5);
                    int size = random.Next(4) == 0 ? random.Next(512 * 1024) : random.Next(8 * 1024);
                    int dataSeed = random.Next();
                    int cut = random.Next(size + 1);
                    try
                    {
                        string? failure = kind switch
                        {
                            0 => await EchoAsync(port, size, dataSeed, chunked: false),
                            1 => await EchoAsync(port, size, dataSeed, chunked: true),
                            2 => await ResetMidStreamAsync(port, size, dataSeed, cut),
                            3 => await ServerAbortAsync(port, size, dataSeed, cut),
                            _ => await HalfCloseFirstAsync(port, size, dataSeed),
                        };
                        Interlocked.Increment(ref counts[kind]);
                        if (failure is not null)
                        {
                            failures.Enqueue($"worker {worker} iteration {iteration} kind {kind} size {size}: {failure}");
                        }
                    }
                    catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                    {
                        failures.Enqueue($"worker {worker} iteration {iteration} kind {kind} size {size}: {ex.GetType().Name} {ex.Message}");
                    }

                    if (!failures.IsEmpty)
                    {
                        return;
                    }
                }
            }, TestContext.Current.CancellationToken);
        }

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(seconds) + TestWait.Default * 4, TestContext.Current.CancellationToken);
        Assert.True(failures.IsEmpty, $"STRESS_SEED={seed} reproduces this run; first failures:\n" + string.Join("\n", failures.Take(5)));
        Assert.Null(await EchoAsync(port, 100_000, seed, chunked: true)); // still serving
        TestContext.Current.SendDiagnosticMessage($"{name} stress seed {seed}: echo {counts[0]}, chunked {counts[1]}, reset {counts[2]}, abort {counts[3]}, half-close first {counts[4]}");
    }

    /// <summary>The server side: a 5-byte header (mode, count), then the mode's behaviour.</summary>
    internal static async Task ServeAsync(ConnectionContext connection)
    {
        PipeReader input = connection.Transport.Input;
        PipeWriter output = connection.Transport.Output;
        ReadResult header;
        while (true)
        {
            header = await input.ReadAsync();
            if (header.Buffer.Length >= 5 || header.IsCompleted)
            {
                break;
            }

            input.AdvanceTo(header.Buffer.Start, header.Buffer.End);
        }

        if (header.Buffer.Length < 5)
        {
            return; // the client reset or closed before its header
        }

        var bytes = new byte[5];
        header.Buffer.Slice(0, 5).CopyTo(bytes);
        input.AdvanceTo(header.Buffer.GetPosition(5));
        byte mode = bytes[0];
        long remaining = mode == AbortAfter ? BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(1)) : long.MaxValue;
        try
        {
            while (remaining > 0)
            {
                ReadResult result = await input.ReadAsync();
                var buffer = result.Buffer;
                if (buffer.Length > remaining)
                {
                    buffer = buffer.Slice(0, remaining);
                }

                foreach (ReadOnlyMemory<byte> segment in buffer)
                {
                    await output.WriteAsync(segment);
                }

                remaining -= buffer.Length;
                input.AdvanceTo(buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is ConnectionResetException or ConnectionAbortedException)
        {
            return; // the client reset: nothing more to do for it
        }

        if (mode == AbortAfter)
        {
            await output.FlushAsync();
            connection.Abort(new ConnectionAbortedException("stress: abort after the requested bytes"));
            return;
        }

        await output.CompleteAsync();
    }

    private static byte[] Payload(int size, int seed)
    {
        var payload = new byte[size];
        new Random(seed).NextBytes(payload);
        return payload;
    }

    private static async Task<RawConnection> ConnectAsync(int port, byte mode, int count)
    {
        RawConnection connection = await RawConnection.ConnectAsync(port);
        var header = new byte[5];
        header[0] = mode;
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(1), count);
        await connection.SendAsync(header);
        return connection;
    }

    /// <summary>Sends everything (in one send or random small chunks), half-closes, expects the same bytes back and a FIN.</summary>
    private static async Task<string?> EchoAsync(int port, int size, int seed, bool chunked)
    {
        byte[] payload = Payload(size, seed);
        using RawConnection connection = await ConnectAsync(port, Echo, 0);
        Task<(byte[] Data, bool Reset)> echo = connection.ReadToEndOrResetAsync();
        if (chunked)
        {
            var random = new Random(seed);
            for (int offset = 0; offset < size;)
            {
                int n = Math.Min(size - offset, 1 + random.Next(3000));
                await connection.SendAsync(payload.AsMemory(offset, n));
                offset += n;
            }
        }
        else
        {
            await connection.SendAsync(payload);
        }

        connection.HalfClose();
        (byte[] data, bool reset) = await echo;
        if (reset)
        {
            return $"reset after {data.Length} of {size} bytes";
        }

        return data.AsSpan().SequenceEqual(payload) ? null : Mismatch(data, payload);
    }

    /// <summary>Half-closes first (with nothing sent but the header), then expects a FIN with no data.</summary>
    private static async Task<string?> HalfCloseFirstAsync(int port, int size, int seed)
    {
        _ = size;
        _ = seed;
        using RawConnection connection = await ConnectAsync(port, Echo, 0);
        connection.HalfClose();
        (byte[] data, bool reset) = await connection.ReadToEndOrResetAsync();
        return reset ? "reset instead of FIN" : data.Length == 0 ? null : $"{data.Length} unexpected bytes";
    }

    /// <summary>Sends part of the payload, reads some of the echo, then resets: whatever came back is a prefix.</summary>
    private static async Task<string?> ResetMidStreamAsync(int port, int size, int seed, int cut)
    {
        byte[] payload = Payload(size, seed);
        using RawConnection connection = await ConnectAsync(port, Echo, 0);
        await connection.SendAsync(payload.AsMemory(0, cut));
        var received = new byte[cut];
        int got = 0;
        int want = cut / 2;
        while (got < want)
        {
            int n = await connection.ReceiveAsync(received.AsMemory(got, want - got));
            if (n == 0)
            {
                return $"FIN after {got} bytes of an open echo";
            }

            got += n;
        }

        connection.Reset();
        return received.AsSpan(0, got).SequenceEqual(payload.AsSpan(0, got)) ? null : Mismatch(received.AsSpan(0, got).ToArray(), payload);
    }

    /// <summary>
    /// Asks the server to abort after <paramref name="cut"/> echoed bytes: what arrives is a prefix
    /// of them, and the connection ends with a reset (both transports close an aborted socket with
    /// SO_LINGER 0).
    /// </summary>
    private static async Task<string?> ServerAbortAsync(int port, int size, int seed, int cut)
    {
        byte[] payload = Payload(size, seed);
        using RawConnection connection = await ConnectAsync(port, AbortAfter, cut);
        Task<(byte[] Data, bool Reset)> echo = connection.ReadToEndOrResetAsync();
        try
        {
            await connection.SendAsync(payload);
            connection.HalfClose(); // if size < cut, the FIN is what ends the server's wait
        }
        catch (SocketException)
        {
            // the abort can land while we still send
        }

        (byte[] data, bool reset) = await echo;
        if (data.Length > cut)
        {
            return $"{data.Length} bytes echoed, but the server was to abort after {cut}";
        }

        if (!reset)
        {
            return "the server's abort ended the connection with FIN, not a reset";
        }

        return data.AsSpan().SequenceEqual(payload.AsSpan(0, data.Length)) ? null : Mismatch(data, payload);
    }

    private static string Mismatch(byte[] data, byte[] expected)
    {
        int i = 0;
        while (i < data.Length && i < expected.Length && data[i] == expected[i])
        {
            i++;
        }

        return $"received {data.Length} of {expected.Length} bytes, first difference at {i}";
    }
}
