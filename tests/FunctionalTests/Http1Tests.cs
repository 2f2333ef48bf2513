using System;
using System.Collections.Concurrent;
using System.IO;
using System.Net;
using System.Net.Http;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace IoUring.FunctionalTests;

public class Http1Tests
{
    [Fact]
    public async Task KeepAliveReusesOneConnection()
    {
        var connectionIds = new ConcurrentBag<string>();
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            connectionIds.Add(context.Connection.Id);
            await context.Response.WriteAsync("hello " + TransportSelector.Name);
        }));
        using HttpClient client = server.CreateClient();
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal("hello " + TransportSelector.Name, await client.GetStringAsync("/", TestContext.Current.CancellationToken));
        }

        Assert.Equal(20, connectionIds.Count);
        Assert.Single(new System.Collections.Generic.HashSet<string>(connectionIds));
    }

    [Fact]
    public async Task PipelinedRequestsAreAnsweredInOrder()
    {
        await using var server = await TestServer.StartAsync(app => app.Run(context =>
        {
            context.Response.ContentLength = context.Request.Path.Value!.Length;
            return context.Response.WriteAsync(context.Request.Path.Value!);
        }));
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        var request = new StringBuilder();
        for (int i = 0; i < 16; i++)
        {
            request.Append("GET /r").Append(i).Append(" HTTP/1.1\r\nHost: localhost\r\n\r\n");
        }

        request.Append("GET /last HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        await connection.SendAsync(request.ToString());
        string responses = await connection.ReadToEndAsStringAsync();
        int position = 0;
        for (int i = 0; i < 16; i++)
        {
            int found = responses.IndexOf("\r\n\r\n/r" + i, position, StringComparison.Ordinal);
            Assert.True(found > 0, $"response {i} missing or out of order");
            position = found + 1;
        }

        Assert.True(responses.IndexOf("\r\n\r\n/last", position, StringComparison.Ordinal) > 0);
    }

    [Fact]
    public async Task LargeRequestAndResponseBodiesArriveIntact()
    {
        const int Size = 24 * 1024 * 1024;
        byte[] upload = new byte[Size];
        new Random(42).NextBytes(upload);
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            if (context.Request.Method == "POST")
            {
                using var sha = SHA256.Create();
                byte[] hash = await sha.ComputeHashAsync(context.Request.Body);
                await context.Response.WriteAsync(Convert.ToHexString(hash));
            }
            else
            {
                var data = new byte[Size];
                new Random(7).NextBytes(data);
                for (int offset = 0; offset < Size; offset += 1 << 20)
                {
                    await context.Response.Body.WriteAsync(data.AsMemory(offset, 1 << 20));
                }
            }
        }));
        using HttpClient client = server.CreateClient();
        using var content = new ByteArrayContent(upload);
        HttpResponseMessage post = await client.PostAsync("/", content, TestContext.Current.CancellationToken);
        Assert.Equal(Convert.ToHexString(SHA256.HashData(upload)), await post.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));

        byte[] expected = new byte[Size];
        new Random(7).NextBytes(expected);
        byte[] downloaded = await client.GetByteArrayAsync("/", TestContext.Current.CancellationToken);
        Assert.Equal(Size, downloaded.Length);
        Assert.Equal(SHA256.HashData(expected), SHA256.HashData(downloaded));
    }

    [Fact]
    public async Task HundredsOfConcurrentConnections()
    {
        await using var server = await TestServer.StartAsync(app => app.Run(context =>
        {
            context.Response.ContentLength = 2;
            return context.Response.WriteAsync("ok");
        }));
        var tasks = new Task<string>[300];
        for (int i = 0; i < tasks.Length; i++)
        {
            tasks[i] = Task.Run(async () =>
            {
                using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
                await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                return await connection.ReadToEndAsStringAsync();
            });
        }

        string[] responses = await Task.WhenAll(tasks);
        Assert.All(responses, r => Assert.StartsWith("HTTP/1.1 200 OK", r, StringComparison.Ordinal));
        Assert.All(responses, r => Assert.EndsWith("\r\n\r\nok", r, StringComparison.Ordinal));
    }

    [Fact]
    public async Task ClientResetMidRequestLeavesTheServerServing()
    {
        var sawFailure = new TaskCompletionSource<Exception>(TaskCreationOptions.RunContinuationsAsynchronously);
        var bodyStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            if (context.Request.Path == "/upload")
            {
                try
                {
                    var buffer = new byte[4096];
                    int n = await context.Request.Body.ReadAsync(buffer);
                    bodyStarted.TrySetResult();
                    while (n > 0)
                    {
                        n = await context.Request.Body.ReadAsync(buffer);
                    }

                    sawFailure.TrySetException(new InvalidOperationException("the body ended normally"));
                }
                catch (Exception ex)
                {
                    sawFailure.TrySetResult(ex);
                }

                return;
            }

            await context.Response.WriteAsync("still serving");
        }));
        // The application swallows the reset and returns; Kestrel's drain of the broken body then
        // logs an error (on Sockets too).
        server.ExpectServerErrors(message => message.Contains("automatic draining of the request body failed", StringComparison.Ordinal));

        using (RawConnection connection = await RawConnection.ConnectAsync(server.Port))
        {
            await connection.SendAsync("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
            await connection.SendAsync(new byte[10_000]);
            await bodyStarted.Task.DefaultTimeout();
            connection.Reset();
        }

        Exception failure = await sawFailure.Task.DefaultTimeout();
        Assert.IsAssignableFrom<IOException>(failure);

        using HttpClient client = server.CreateClient();
        Assert.Equal("still serving", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task ServerAbortEndsTheConnection()
    {
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            if (context.Request.Path == "/abort")
            {
                await context.Response.WriteAsync("partial");
                await context.Response.Body.FlushAsync();
                context.Abort();
                return;
            }

            await context.Response.WriteAsync("fine");
        }));
        using HttpClient client = server.CreateClient();
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => client.GetStringAsync("/abort", TestContext.Current.CancellationToken));
        Assert.Equal("fine", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task ConnectionFeaturesAreExposed()
    {
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            var socket = context.Features.Get<IConnectionSocketFeature>()?.Socket;
            byte[] body = Encoding.ASCII.GetBytes(
                $"{context.Connection.LocalIpAddress}:{context.Connection.LocalPort}|{context.Connection.RemoteIpAddress}:{context.Connection.RemotePort}|{socket?.LocalEndPoint}");
            context.Response.ContentLength = body.Length;
            await context.Response.Body.WriteAsync(body);
        }));
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        string response = await connection.ReadToEndAsStringAsync();
        string body = response[(response.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];
        var local = (IPEndPoint)connection.Socket.LocalEndPoint!;
        Assert.Equal($"127.0.0.1:{server.Port}|127.0.0.1:{local.Port}|127.0.0.1:{server.Port}", body);
    }

    [Fact]
    public async Task WildcardListenerReportsTheAddressEachConnectionReached()
    {
        await using var server = await TestServer.StartAsync(
            app => app.Run(async context =>
            {
                byte[] body = Encoding.ASCII.GetBytes($"{context.Connection.LocalIpAddress}:{context.Connection.LocalPort}");
                context.Response.ContentLength = body.Length;
                await context.Response.Body.WriteAsync(body);
            }),
            kestrel => kestrel.Listen(IPAddress.Any, 0));
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        string response = await connection.ReadToEndAsStringAsync();
        Assert.EndsWith($"\r\n\r\n127.0.0.1:{server.Port}", response, StringComparison.Ordinal);
    }
}
