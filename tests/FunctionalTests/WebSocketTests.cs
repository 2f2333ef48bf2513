using System;
using System.Net.WebSockets;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Xunit;

namespace IoUring.FunctionalTests;

public class WebSocketTests
{
    [Fact]
    public async Task WebSocketEchoesMessagesOfEverySize()
    {
        await using var server = await TestServer.StartAsync(app =>
        {
            app.UseWebSockets();
            app.Run(async context =>
            {
                if (!context.WebSockets.IsWebSocketRequest)
                {
                    context.Response.StatusCode = 400;
                    return;
                }

                using WebSocket socket = await context.WebSockets.AcceptWebSocketAsync();
                var buffer = new byte[1 << 20];
                while (true)
                {
                    int count = 0;
                    ValueWebSocketReceiveResult result;
                    do
                    {
                        result = await socket.ReceiveAsync(buffer.AsMemory(count), default);
                        count += result.Count;
                    }
                    while (!result.EndOfMessage);

                    if (result.MessageType == WebSocketMessageType.Close)
                    {
                        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", default);
                        return;
                    }

                    await socket.SendAsync(buffer.AsMemory(0, count), result.MessageType, true, default);
                }
            });
        });

        using var client = new ClientWebSocket();
        var uri = new UriBuilder(server.BaseAddress) { Scheme = "ws" }.Uri;
        await client.ConnectAsync(uri, TestContext.Current.CancellationToken);
        foreach (int size in new[] { 1, 125, 126, 65535, 65536, 500_000 })
        {
            var message = new byte[size];
            Random.Shared.NextBytes(message);
            await client.SendAsync(message, WebSocketMessageType.Binary, true, TestContext.Current.CancellationToken);
            var received = new byte[size];
            int got = 0;
            ValueWebSocketReceiveResult result;
            do
            {
                result = await client.ReceiveAsync(received.AsMemory(got), TestContext.Current.CancellationToken);
                got += result.Count;
            }
            while (!result.EndOfMessage);

            Assert.Equal(size, got);
            Assert.Equal(message, received);
        }

        await client.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", TestContext.Current.CancellationToken);
        Assert.Equal(WebSocketState.Closed, client.State);
    }
}
