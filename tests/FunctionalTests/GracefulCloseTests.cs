using System;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// How a connection ends. Kestrel closes a connection gracefully with <c>Abort(null)</c> (a client
/// that half-closed, a keep-alive connection the client ended): that ends in a FIN, so nothing
/// already sent is lost. An abort with a reason (<c>HttpContext.Abort()</c>) is a reset.
/// </summary>
public class GracefulCloseTests
{
    private const int Rounds = 10;
    private const int KeepAliveClients = 1000;
    private const int KeepAliveConcurrency = 16;
    private const int LargeBody = 4 * 1024 * 1024;

    private static Task<TestServer> StartAsync() => TestServer.StartAsync(app => app.Run(async context =>
    {
        switch (context.Request.Path.Value)
        {
            case "/large":
                context.Response.ContentLength = LargeBody;
                var chunk = new byte[64 * 1024];
                chunk.AsSpan().Fill((byte)'x');
                for (int sent = 0; sent < LargeBody; sent += chunk.Length)
                {
                    await context.Response.Body.WriteAsync(chunk);
                }

                break;
            case "/abort":
                await context.Response.WriteAsync("partial");
                await context.Response.Body.FlushAsync();
                context.Abort();
                break;
            default:
                context.Response.ContentLength = 13;
                await context.Response.WriteAsync("Hello, World!");
                break;
        }
    }));

    [Fact]
    public async Task AClientThatHalfClosesAfterItsRequestGetsAFin()
    {
        await using TestServer server = await StartAsync();
        for (int round = 0; round < Rounds; round++)
        {
            (byte[] data, bool reset) = await RequestThenHalfCloseAsync(server, "/");
            Assert.False(reset, $"round {round}: the server reset the connection after {data.Length} bytes; a graceful close is a FIN");
            // Kestrel ends the request when the client's end of stream arrives, so the response
            // may not have been written (on Sockets, measured: about half the time nothing comes);
            // what was written arrives whole.
            if (data.Length > 0)
            {
                AssertResponse(data, "Hello, World!"u8.ToArray());
            }
        }
    }

    [Fact]
    public async Task AClientThatHalfClosesDuringALargeDownloadGetsAFin()
    {
        await using TestServer server = await StartAsync();
        for (int round = 0; round < Rounds; round++)
        {
            (byte[] data, bool reset) = await RequestThenHalfCloseAsync(server, "/large");
            Assert.False(reset, $"round {round}: the server reset the connection after {data.Length} bytes; a graceful close is a FIN");
            // Kestrel stops the response when the client's end of stream arrives: what came is a prefix of it.
            Assert.True(data.Length <= HeaderLength(data) + LargeBody, $"round {round}: more bytes than the response has");
            Assert.True(data.Skip(HeaderLength(data)).All(b => b == (byte)'x'), $"round {round}: the body is not the one sent");
        }
    }

    [Fact]
    public async Task AKeepAliveClientThatClosesAfterItsLastResponseGetsAFin()
    {
        // Which of Kestrel's two ways to end an idle connection whose client sent FIN runs first is a
        // race (its request loop sees the end of the input, or the transport's ConnectionClosed
        // fires): many clients at once, so that both happen.
        await using TestServer server = await StartAsync();
        var clients = new Task[KeepAliveClients];
        using var concurrent = new SemaphoreSlim(KeepAliveConcurrency);
        for (int i = 0; i < clients.Length; i++)
        {
            int client = i;
            clients[i] = Task.Run(async () =>
            {
                await concurrent.WaitAsync(TestContext.Current.CancellationToken);
                try
                {
                    using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
                    for (int request = 0; request < 2; request++)
                    {
                        await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                        AssertResponse(await ReadResponseAsync(connection, bodyLength: 13), "Hello, World!"u8.ToArray());
                    }

                    connection.HalfClose();
                    (byte[] data, bool reset) = await connection.ReadToEndOrResetAsync().DefaultTimeout();
                    Assert.False(reset, $"client {client}: the server reset the idle connection the client ended; a graceful close is a FIN");
                    Assert.Empty(data);
                }
                finally
                {
                    concurrent.Release();
                }
            }, TestContext.Current.CancellationToken);
        }

        await Task.WhenAll(clients);
    }

    [Fact]
    public async Task AnAbortByTheApplicationResets()
    {
        await using TestServer server = await StartAsync();
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        await connection.SendAsync("GET /abort HTTP/1.1\r\nHost: x\r\n\r\n");

        (byte[] data, bool reset) = await connection.ReadToEndOrResetAsync().DefaultTimeout();
        Assert.True(reset, $"the connection ended with a FIN after {data.Length} bytes; an abort is a reset");
    }

    /// <summary>Sends a GET for <paramref name="path"/>, half-closes at once, and reads to the end (or the reset).</summary>
    private static async Task<(byte[] Data, bool Reset)> RequestThenHalfCloseAsync(TestServer server, string path)
    {
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        await connection.SendAsync($"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        connection.HalfClose();
        return await connection.ReadToEndOrResetAsync().DefaultTimeout();
    }

    /// <summary>Reads one response whose body has <paramref name="bodyLength"/> bytes.</summary>
    private static async Task<byte[]> ReadResponseAsync(RawConnection connection, int bodyLength)
    {
        var data = new System.IO.MemoryStream();
        var buffer = new byte[4096];
        while (data.Length == 0 || HeaderLength(data.ToArray()) == 0 || data.Length < HeaderLength(data.ToArray()) + bodyLength)
        {
            int n = await connection.ReceiveAsync(buffer).DefaultTimeout();
            Assert.True(n > 0, "the connection ended before the response did");
            data.Write(buffer, 0, n);
        }

        return data.ToArray();
    }

    /// <summary>The length of the status line and headers with their blank line, or 0 if they have not all arrived.</summary>
    private static int HeaderLength(byte[] data)
    {
        int end = data.AsSpan().IndexOf("\r\n\r\n"u8);
        return end < 0 ? 0 : end + 4;
    }

    private static void AssertResponse(byte[] data, byte[] body)
    {
        string text = Encoding.ASCII.GetString(data);
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", text, StringComparison.Ordinal);
        Assert.Equal(HeaderLength(data) + body.Length, data.Length);
        Assert.Equal(body, data[HeaderLength(data)..]);
    }
}
