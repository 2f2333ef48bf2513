using System.Net.WebSockets;
using IoUring.Transport;
using Microsoft.AspNetCore.Connections;

// WebSockets on io_uring: an echo endpoint at /ws and a page at / that talks to it.
var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseIoUringTransport();

var app = builder.Build();
app.UseWebSockets();
app.MapGet("/", () => Results.Content(Page.Html, "text/html; charset=utf-8"));
app.Map("/ws", async context =>
{
    if (!context.WebSockets.IsWebSocketRequest)
    {
        context.Response.StatusCode = StatusCodes.Status400BadRequest;
        return;
    }

    using WebSocket socket = await context.WebSockets.AcceptWebSocketAsync();
    await Echo.RunAsync(socket, context.RequestAborted);
});

await app.StartAsync();
var factory = app.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().Single();
Console.WriteLine($"Transport: {(factory.IsUsingIoUring ? "io_uring" : "Sockets (fallback)")}");
Console.WriteLine($"Listening on: {string.Join(", ", app.Urls)}");
await app.WaitForShutdownAsync();

internal static class Echo
{
    /// <summary>Sends every message back as it came (text or binary, in as many frames), until the client closes.</summary>
    public static async Task RunAsync(WebSocket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[4096];
        while (true)
        {
            ValueWebSocketReceiveResult received = await socket.ReceiveAsync(buffer.AsMemory(), cancellationToken);
            if (received.MessageType == WebSocketMessageType.Close)
            {
                await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", cancellationToken);
                return;
            }

            await socket.SendAsync(buffer.AsMemory(0, received.Count), received.MessageType, received.EndOfMessage, cancellationToken);
        }
    }
}

internal static class Page
{
    public const string Html = """
        <!doctype html>
        <html lang="en">
        <meta charset="utf-8">
        <title>WebSocket echo on io_uring</title>
        <form id="send"><input id="text" autocomplete="off" placeholder="Say something"> <button>Send</button></form>
        <ul id="log"></ul>
        <script>
          const log = document.getElementById("log");
          const note = text => { const li = document.createElement("li"); li.textContent = text; log.append(li); };
          const socket = new WebSocket(`ws://${location.host}/ws`);
          socket.onopen = () => note("connected");
          socket.onmessage = e => note(`echo: ${e.data}`);
          socket.onclose = () => note("closed");
          document.getElementById("send").onsubmit = e => {
            e.preventDefault();
            const input = document.getElementById("text");
            socket.send(input.value);
            input.value = "";
          };
        </script>
        </html>
        """;
}
