using System;
using System.Collections.Generic;
using System.Net.Http;
using System.Net.WebSockets;
using System.Text;
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

        Assert.Equal(System.Linq.Enumerable.Range(1, 100), values);
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
