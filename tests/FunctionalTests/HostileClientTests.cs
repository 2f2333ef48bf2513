using System;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Text;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// Hostile clients: Kestrel's limits still close slow ones (the transport must deliver the timing
/// and the close), and garbage or truncated requests close only their own connection.
/// </summary>
public class HostileClientTests
{
    private static readonly TimeSpan s_limit = TimeSpan.FromSeconds(2);

    /// <summary>Starts the app; what it throws goes into <paramref name="errors"/> too, for failure messages.</summary>
    private static Task<TestServer> StartAsync(ConcurrentQueue<Exception>? errors = null) => TestServer.StartAsync(
        app => app.Run(async context =>
        {
            try
            {
                using var body = new MemoryStream();
                await context.Request.Body.CopyToAsync(body, context.RequestAborted);
                await context.Response.WriteAsync($"ok {body.Length}", context.RequestAborted);
            }
            catch (Exception ex) when (Note(errors, ex))
            {
                // Never reached: Note returns false, so Kestrel sees the exception as before.
            }
        }),
        kestrel =>
        {
            kestrel.Limits.KeepAliveTimeout = s_limit;
            kestrel.Limits.RequestHeadersTimeout = s_limit;
            // Kestrel requires a grace period above its 1 s heartbeat.
            kestrel.Limits.MinRequestBodyDataRate = new MinDataRate(bytesPerSecond: 1000, gracePeriod: TimeSpan.FromSeconds(1.5));
            kestrel.Listen(IPAddress.Loopback, 0);
        });

    [Fact]
    public async Task IdleConnectionIsClosedAfterKeepAliveTimeout()
    {
        await using TestServer server = await StartAsync();
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        var elapsed = Stopwatch.StartNew();
        (byte[] data, _) = await connection.ReadToEndOrResetAsync().DefaultTimeout();
        Assert.Empty(data);
        Assert.True(elapsed.Elapsed >= s_limit - TimeSpan.FromMilliseconds(200), $"closed after {elapsed.Elapsed}, before the keep-alive timeout");
        await AssertServesAsync(server);
    }

    [Fact]
    public async Task SlowlorisHeadersAreCutOffByRequestHeadersTimeout()
    {
        await using TestServer server = await StartAsync();
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        Task<(byte[] Data, bool Reset)> response = connection.ReadToEndOrResetAsync();
        byte[] request = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + new string('a', 1000));
        var elapsed = Stopwatch.StartNew();
        int sent = 0;
        // One byte every 100 ms: the headers would take 100 s to finish; the server must not wait.
        while (!response.IsCompleted && sent < request.Length)
        {
            try
            {
                await connection.SendAsync(request.AsMemory(sent++, 1));
            }
            catch (SocketException)
            {
                break; // the server closed and reset us
            }

            await Task.WhenAny(response, Task.Delay(100, TestContext.Current.CancellationToken));
        }

        (byte[] data, _) = await response.DefaultTimeout();
        Assert.True(sent < request.Length, "the server waited for the whole slow request");
        Assert.True(elapsed.Elapsed >= s_limit - TimeSpan.FromMilliseconds(200), $"closed after {elapsed.Elapsed}, before the headers timeout");
        string text = Encoding.ASCII.GetString(data);
        Assert.True(text.Length == 0 || text.StartsWith("HTTP/1.1 408", StringComparison.Ordinal), text);
        await AssertServesAsync(server);
    }

    [Fact]
    public async Task SlowBodyIsCutOffByMinRequestBodyDataRate()
    {
        var errors = new ConcurrentQueue<Exception>();
        await using TestServer server = await StartAsync(errors);
        // The application lets the timeout through, so Kestrel logs it as unhandled (and answers 408).
        server.ExpectServerErrors(message => message.Contains("MinRequestBodyDataRate", StringComparison.Ordinal));
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        Task<(byte[] Data, bool Reset)> response = connection.ReadToEndOrResetAsync();
        await connection.SendAsync("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
        int sent = 0;
        // Ten bytes a second against a minimum of 1000.
        while (!response.IsCompleted && sent < 100_000)
        {
            try
            {
                await connection.SendAsync(new byte[1]);
                sent++;
            }
            catch (SocketException)
            {
                break;
            }

            await Task.WhenAny(response, Task.Delay(100, TestContext.Current.CancellationToken));
        }

        (byte[] data, _) = await response.DefaultTimeout();
        Assert.True(sent < 1000, $"the server accepted {sent} bytes at 10 bytes a second");
        string text = Encoding.ASCII.GetString(data);
        Assert.True(text.Length == 0 || text.StartsWith("HTTP/1.1 408", StringComparison.Ordinal), $"{text}\nThe application saw: {string.Join("\n", errors)}");
        await AssertServesAsync(server);
    }

    private static bool Note(ConcurrentQueue<Exception>? errors, Exception ex)
    {
        errors?.Enqueue(ex);
        return false;
    }

    [Fact]
    public async Task GarbageAndTruncatedRequestsCloseOnlyTheirOwnConnection()
    {
        await using TestServer server = await StartAsync();
        var random = new Random(17);
        byte[][] hostile =
        [
            .. Enumerable(20, i =>
            {
                var garbage = new byte[1 + random.Next(64 * 1024)];
                random.NextBytes(garbage);
                return garbage;
            }),
            "GET / HTTP/1.1\r\nHost: x\r\n"u8.ToArray(),                                    // headers cut short
            "GET / HTTP/1.1\r\nHost"u8.ToArray(),                                            // a header name cut short
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"u8.ToArray(), // body cut short
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc"u8.ToArray(), // chunk cut short
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"u8.ToArray(),          // invalid length
            "\0\0\0\0\r\n\r\n"u8.ToArray(),
        ];

        using HttpClient client = server.CreateClient();
        var good = new Task<string>[hostile.Length];
        var bad = new Task<(byte[] Data, bool Reset)>[hostile.Length];
        for (int i = 0; i < hostile.Length; i++)
        {
            byte[] payload = hostile[i];
            bad[i] = Task.Run(async () =>
            {
                using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
                Task<(byte[] Data, bool Reset)> response = connection.ReadToEndOrResetAsync();
                try
                {
                    await connection.SendAsync(payload);
                    connection.HalfClose();
                }
                catch (SocketException)
                {
                    // the server answered 400 and closed before we finished
                }

                return await response;
            }, TestContext.Current.CancellationToken);
            good[i] = PostAsync(client, i * 1000);
        }

        // Every hostile connection ends (none hangs until a timeout of the test), every good request succeeds.
        foreach ((byte[] data, bool reset) in await Task.WhenAll(bad).DefaultTimeout(times: 2))
        {
            string text = Encoding.ASCII.GetString(data);
            Assert.True(reset || text.Length == 0 || text.StartsWith("HTTP/1.1 400", StringComparison.Ordinal), text);
        }

        string[] answers = await Task.WhenAll(good).DefaultTimeout(times: 2);
        for (int i = 0; i < answers.Length; i++)
        {
            Assert.Equal($"ok {i * 1000}", answers[i]);
        }

        static async Task<string> PostAsync(HttpClient client, int size)
        {
            using var content = new ByteArrayContent(new byte[size]);
            using HttpResponseMessage response = await client.PostAsync("/", content, TestContext.Current.CancellationToken);
            return await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        }
    }

    private static T[] Enumerable<T>(int count, Func<int, T> make)
    {
        var items = new T[count];
        for (int i = 0; i < count; i++)
        {
            items[i] = make(i);
        }

        return items;
    }

    private static async Task AssertServesAsync(TestServer server)
    {
        using HttpClient client = server.CreateClient();
        using var content = new ByteArrayContent(new byte[5000]);
        using HttpResponseMessage response = await client.PostAsync("/", content, TestContext.Current.CancellationToken);
        Assert.Equal("ok 5000", await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
    }
}
