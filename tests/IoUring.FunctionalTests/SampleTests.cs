using System;
using System.Collections.Generic;
using System.Linq;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Threading.Tasks;
using Grpc.Core;
using Grpc.Net.Client;
using GrpcGreeter;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>The samples, started as a user starts them and talked to with real clients: each serves on io_uring.</summary>
public class SampleTests
{
    [Fact]
    public async Task TheGrpcSampleAnswersAUnaryAndAStreamingCallOnIoUring()
    {
        await using SampleApp sample = await SampleApp.StartAsync("GrpcGreeter");
        Assert.True(sample.Transport == "io_uring", sample.Output);
        using GrpcChannel channel = GrpcChannel.ForAddress(sample.Address);
        var client = new Greeter.GreeterClient(channel);

        HelloReply reply = await client.SayHelloAsync(new HelloRequest { Name = "ring" }, cancellationToken: TestContext.Current.CancellationToken).ResponseAsync.DefaultTimeout();
        Assert.Equal("Hello, ring!", reply.Message);

        using AsyncServerStreamingCall<CountReply> call = client.CountTo(new CountRequest { To = 100 }, cancellationToken: TestContext.Current.CancellationToken);
        var values = new List<int>();
        await foreach (CountReply value in call.ResponseStream.ReadAllAsync(TestContext.Current.CancellationToken))
        {
            values.Add(value.Value);
        }

        Assert.Equal(Enumerable.Range(1, 100), values);
    }

    [Fact]
    public async Task TheWebSocketSampleServesItsPageAndEchoesTextAndBinaryMessagesOnIoUring()
    {
        await using SampleApp sample = await SampleApp.StartAsync("WebSocketEcho");
        Assert.True(sample.Transport == "io_uring", sample.Output);
        using (var http = new HttpClient { BaseAddress = sample.Address })
        {
            string page = await http.GetStringAsync("/", TestContext.Current.CancellationToken).DefaultTimeout();
            Assert.Contains("new WebSocket(`ws://${location.host}/ws`)", page, StringComparison.Ordinal);
        }

        using var socket = new ClientWebSocket();
        Uri endpoint = new UriBuilder(sample.Address) { Scheme = "ws", Path = "/ws" }.Uri;
        await socket.ConnectAsync(endpoint, TestContext.Current.CancellationToken).DefaultTimeout();
        byte[] big = new byte[100_000];
        new Random(7).NextBytes(big);
        foreach ((byte[] message, WebSocketMessageType type) in new[] { (Encoding.UTF8.GetBytes("hello, ring"), WebSocketMessageType.Text), (big, WebSocketMessageType.Binary) })
        {
            await socket.SendAsync(message, type, endOfMessage: true, TestContext.Current.CancellationToken).DefaultTimeout();
            byte[] echoed = await ReceiveMessageAsync(socket, type);
            Assert.Equal(message, echoed);
        }

        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", TestContext.Current.CancellationToken).DefaultTimeout();
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
    }

    [Fact]
    public async Task TheYarpSampleProxiesGetsAndLargePostsToItsBackendOnIoUringBothWays()
    {
        await using SampleApp backend = await SampleApp.StartAsync("YarpProxy/Backend");
        Assert.True(backend.Transport == "io_uring", backend.Output);
        await using SampleApp proxy = await SampleApp.StartAsync("YarpProxy", new Dictionary<string, string>
        {
            ["ReverseProxy__Clusters__backend__Destinations__backend__Address"] = backend.Address.ToString(),
        });
        Assert.True(proxy.Transport == "io_uring", proxy.Output);

        using var http = new HttpClient { BaseAddress = proxy.Address };
        byte[] body = new byte[300_000];
        new Random(16).NextBytes(body);
        // Several at once, so that the proxy opens more than one connection to the backend.
        await Task.WhenAll(Enumerable.Range(0, 8).Select(async i =>
        {
            using var request = i % 2 == 0
                ? new HttpRequestMessage(HttpMethod.Get, "/")
                : new HttpRequestMessage(HttpMethod.Post, "/echo") { Content = new ByteArrayContent(body) { Headers = { ContentType = new MediaTypeHeaderValue("application/octet-stream") } } };
            using HttpResponseMessage response = await http.SendAsync(request, TestContext.Current.CancellationToken);
            Assert.True(response.IsSuccessStatusCode, $"{request.Method} {request.RequestUri}: {response.StatusCode}\n{proxy.Output}\n{backend.Output}");
            Assert.Equal("io_uring", Assert.Single(response.Headers.GetValues("X-Backend"))); // set by the backend
            byte[] content = await response.Content.ReadAsByteArrayAsync(TestContext.Current.CancellationToken);
            if (i % 2 == 0)
            {
                Assert.Equal("Hello from the backend!", Encoding.UTF8.GetString(content));
            }
            else
            {
                Assert.Equal("application/octet-stream", response.Content.Headers.ContentType?.MediaType);
                Assert.True(body.AsSpan().SequenceEqual(content), $"echo of {body.Length} bytes came back as {content.Length} different bytes");
            }
        })).DefaultTimeout();

        // The proxy's outbound connections: made by IoUringConnectionFactory on the rings.
        using JsonDocument transport = JsonDocument.Parse(await http.GetStringAsync("/proxy/transport", TestContext.Current.CancellationToken).DefaultTimeout());
        JsonElement root = transport.RootElement;
        Assert.True(root.GetProperty("inbound").GetString() == "io_uring", root.ToString());
        Assert.True(root.GetProperty("outbound").GetString() == "io_uring", root.ToString());
        Assert.True(root.GetProperty("connectedOnRings").GetInt64() > 0, root.ToString());
    }

    private static async Task<byte[]> ReceiveMessageAsync(ClientWebSocket socket, WebSocketMessageType expected)
    {
        var message = new System.IO.MemoryStream();
        var buffer = new byte[16 * 1024];
        while (true)
        {
            WebSocketReceiveResult result = await socket.ReceiveAsync(buffer, TestContext.Current.CancellationToken).DefaultTimeout();
            Assert.Equal(expected, result.MessageType);
            message.Write(buffer, 0, result.Count);
            if (result.EndOfMessage)
            {
                return message.ToArray();
            }
        }
    }
}
