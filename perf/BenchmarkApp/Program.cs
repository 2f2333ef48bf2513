using System;
using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipelines;
using System.Linq;
using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using BenchmarkApp;
using IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

// The benchmark server: the same endpoints on either transport, chosen on the command line, so a
// run compares transports and nothing else.
//   --transport iouring|sockets   (default iouring)
//   --inline true|false           UnsafePreferInlineScheduling on the chosen transport (default false)
//   --port N                      HTTP/1.1 (default 5100)
//   --h2port N                    HTTP/2 only, cleartext with prior knowledge (default 5101)
//   --echoport N                  connection-level echo, no HTTP (default 5102)
//   --tlsport N                   HTTPS, HTTP/1.1 and HTTP/2 by ALPN, with a self-signed
//                                 certificate made at start, in memory only (default 0: none)
//   --grpc true|false             serve bench.proto's gRPC service on every port (HTTP/2 only for
//                                 clients); puts endpoint routing before every request (default false)
// Endpoints: /plaintext, /json, /64k, /1m (1 MiB), /delay (awaits 1 ms, then plaintext), /cpu
// (0.5 ms of CPU, then plaintext), POST /upload (reads the body, answers with its length), /ws
// (WebSocket echo), /stats.
// GET /stats on the HTTP/1.1 port prints the transport's metrics (?gc: after a full GC), for perf/soak.sh.
// Other io_uring options bind as usual, e.g. --IoUring:RingCount 2 or IoUring__RingCount=2.
// The content root is the app's own folder, not the working directory: the host watches its
// content root, subfolders included, for changes to its settings files, and perf/run.sh's load
// generators write their logs under perf/results/ while they run (h2load a line per request). From
// the checkout's root that kept the server's file-watcher thread busy: over a quarter of its CPU in
// the HTTP/2 scenarios, on both transports (perf/README.md, "Every scenario profiled").
var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Logging.ClearProviders();
builder.Logging.AddConsole();
builder.Logging.SetMinimumLevel(LogLevel.Warning);

string transport = builder.Configuration.GetValue("transport", "iouring")!.ToUpperInvariant();
bool inline = builder.Configuration.GetValue("inline", false);
int port = builder.Configuration.GetValue("port", 5100);
int h2Port = builder.Configuration.GetValue("h2port", 5101);
int echoPort = builder.Configuration.GetValue("echoport", 5102);
int tlsPort = builder.Configuration.GetValue("tlsport", 0);
bool grpc = builder.Configuration.GetValue("grpc", false);

switch (transport)
{
    case "IOURING":
        builder.WebHost.UseIoUringTransport(o =>
        {
            // A benchmark must never measure Sockets twice: fail at start instead of falling back.
            o.Enabled = true;
            o.FallbackToSockets = false;
            o.UnsafePreferInlineScheduling = inline;
        });
        break;
    case "SOCKETS":
        // Kestrel's own transport, untouched apart from the one switch both transports share.
        builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = inline);
        break;
    default:
        Console.Error.WriteLine($"--transport must be iouring or sockets, not '{transport}'");
        return 2;
}

// Only when asked for: the other scenarios, perf/idle.sh and perf/soak.sh run the server as before.
using X509Certificate2? certificate = tlsPort == 0 ? null : SelfSignedCertificate.Create();
builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.AddServerHeader = false;
    kestrel.Listen(IPAddress.Loopback, port, o => o.Use(CountConnections));
    kestrel.Listen(IPAddress.Loopback, h2Port, o =>
    {
        o.Protocols = HttpProtocols.Http2;
        o.Use(CountConnections);
    });
    if (certificate is not null)
    {
        kestrel.Listen(IPAddress.Loopback, tlsPort, o =>
        {
            // wrk offers no ALPN and gets HTTP/1.1; h2load offers h2 and gets it.
            o.Protocols = HttpProtocols.Http1AndHttp2;
            o.Use(CountConnections);
            o.UseHttps(certificate);
        });
    }

    kestrel.Listen(IPAddress.Loopback, echoPort, o => o.Run(EchoAsync));
});
if (grpc)
{
    BenchGrpc.AddServices(builder.Services);
}

var app = builder.Build();
using var stats = new TransportStats();
if (grpc)
{
    BenchGrpc.Map(app);
}

// The WebSocket middleware in a branch of its own, so the other endpoints do not pass through it.
IApplicationBuilder webSocketBranch = ((IApplicationBuilder)app).New();
webSocketBranch.UseWebSockets();
webSocketBranch.Run(WebSocketEchoAsync);
RequestDelegate webSocketEcho = webSocketBranch.Build();
app.Run(context => context.Request.Path.Value switch
{
    "/stats" => StatsAsync(context, stats),
    "/ws" => webSocketEcho(context),
    _ => HandleAsync(context),
});
await app.StartAsync();

// One line on stdout that perf/run.sh checks: which transport really serves.
IoUringTransportFactory? ioUring = app.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().SingleOrDefault();
string serving = transport == "SOCKETS"
    ? "sockets"
    : ioUring!.IsUsingIoUring ? "iouring" : "sockets (fallback)";
string dispatch = serving == "iouring" ? $" dispatch={ioUring!.ActiveDispatch}" : "";
Console.WriteLine($"BenchmarkApp transport={serving} inline={(inline ? "true" : "false")} http1={port} h2={h2Port} tls={tlsPort} echo={echoPort} grpc={(grpc ? "true" : "false")} processors={Environment.ProcessorCount}{dispatch}");

await app.WaitForShutdownAsync();
return 0;

// One terminal middleware and a switch on the path: no routing, no MVC, so the transport is most of
// what a request costs.
static Task HandleAsync(HttpContext context)
{
    var response = context.Response;
    switch (context.Request.Path.Value)
    {
        case "/plaintext":
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = "text/plain";
            response.ContentLength = Payloads.HelloWorld.Length;
            return response.BodyWriter.WriteAsync(Payloads.HelloWorld).AsTask();
        case "/json":
            byte[] json = JsonSerializer.SerializeToUtf8Bytes(new JsonMessage("Hello, World!"), BenchmarkJsonContext.Default.JsonMessage);
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = "application/json";
            response.ContentLength = json.Length;
            return response.BodyWriter.WriteAsync(json).AsTask();
        case "/64k":
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = "application/octet-stream";
            response.ContentLength = Payloads.SixtyFourKiB.Length;
            return response.BodyWriter.WriteAsync(Payloads.SixtyFourKiB).AsTask();
        case "/1m":
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = "application/octet-stream";
            response.ContentLength = Payloads.OneMiB.Length;
            return response.BodyWriter.WriteAsync(Payloads.OneMiB).AsTask();
        case "/upload":
            return UploadAsync(context);
        case "/delay":
            return DelayedAsync(response);
        case "/cpu":
            // A slow request: half a millisecond of CPU on whatever thread runs the application (with
            // --inline true, the ring thread of its connection), then "Hello, World!". perf/run.sh's
            // uneven scenarios send these on a few connections beside the measured ones.
            long until = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 2000;
            while (Stopwatch.GetTimestamp() < until)
            {
                Thread.SpinWait(20);
            }

            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = "text/plain";
            response.ContentLength = Payloads.HelloWorld.Length;
            return response.BodyWriter.WriteAsync(Payloads.HelloWorld).AsTask();
        default:
            response.StatusCode = StatusCodes.Status404NotFound;
            return Task.CompletedTask;
    }
}

// A request that waits for something else, as one awaiting a database would: 1 ms, then plaintext.
static async Task DelayedAsync(HttpResponse response)
{
    await Task.Delay(1);
    response.StatusCode = StatusCodes.Status200OK;
    response.ContentType = "text/plain";
    response.ContentLength = Payloads.HelloWorld.Length;
    await response.BodyWriter.WriteAsync(Payloads.HelloWorld);
}

// Reads the request body and drops it, then answers with its length in bytes: an upload whose cost
// is receiving, not storing. Kestrel's MaxRequestBodySize (30,000,000 bytes) bounds it.
static async Task UploadAsync(HttpContext context)
{
    if (!HttpMethods.IsPost(context.Request.Method))
    {
        context.Response.StatusCode = StatusCodes.Status405MethodNotAllowed;
        return;
    }

    PipeReader body = context.Request.BodyReader;
    long length = 0;
    while (true)
    {
        ReadResult result = await body.ReadAsync();
        length += result.Buffer.Length;
        body.AdvanceTo(result.Buffer.End);
        if (result.IsCompleted)
        {
            break;
        }
    }

    byte[] answer = Encoding.ASCII.GetBytes(length.ToString(CultureInfo.InvariantCulture));
    context.Response.StatusCode = StatusCodes.Status200OK;
    context.Response.ContentType = "text/plain";
    context.Response.ContentLength = answer.Length;
    await context.Response.BodyWriter.WriteAsync(answer);
}

// Sends every message back whole, as one frame of the type it came in, until the client closes.
// Whole messages, not each piece a receive returns: how the transport happens to split the bytes
// must not change how many frames the server sends. Messages up to 64 KiB (a longer one is sent
// back in 64 KiB frames).
static async Task WebSocketEchoAsync(HttpContext context)
{
    if (!context.WebSockets.IsWebSocketRequest)
    {
        context.Response.StatusCode = StatusCodes.Status400BadRequest;
        return;
    }

    using WebSocket socket = await context.WebSockets.AcceptWebSocketAsync();
    byte[] buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
    try
    {
        while (true)
        {
            int length = 0;
            ValueWebSocketReceiveResult received;
            do
            {
                received = await socket.ReceiveAsync(buffer.AsMemory(length), context.RequestAborted);
                length += received.Count;
            }
            while (!received.EndOfMessage && length < buffer.Length && received.MessageType != WebSocketMessageType.Close);

            if (received.MessageType == WebSocketMessageType.Close)
            {
                await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, context.RequestAborted);
                return;
            }

            await socket.SendAsync(buffer.AsMemory(0, length), received.MessageType, received.EndOfMessage, context.RequestAborted);
        }
    }
    catch (Exception e) when (e is WebSocketException or OperationCanceledException)
    {
        // The client went away without a close handshake (a load generator stopped): nothing to answer.
    }
    finally
    {
        ArrayPool<byte>.Shared.Return(buffer);
    }
}

// Counts each connection, then hands it on. Built once per listener, so a connection allocates
// nothing here (the Func<Task> form of Use would allocate a closure per connection).
static ConnectionDelegate CountConnections(ConnectionDelegate next) => connection =>
{
    ConnectionCounter.OnAccepted();
    return next(connection);
};

// The /stats request's own receive buffer goes back to its ring just after Kestrel parsed the
// request (the return is queued to the ring thread): wait a moment so the reading counts
// nothing of this request but its open connection.
static async Task StatsAsync(HttpContext context, TransportStats stats)
{
    await Task.Delay(100);
    await context.Response.WriteAsync(stats.Snapshot(collect: context.Request.Query.ContainsKey("gc")));
}

// Writes back every byte the connection receives, until the peer closes its side.
static async Task EchoAsync(ConnectionContext connection)
{
    PipeReader input = connection.Transport.Input;
    PipeWriter output = connection.Transport.Output;
    while (true)
    {
        ReadResult result = await input.ReadAsync();
        ReadOnlySequence<byte> buffer = result.Buffer;
        foreach (ReadOnlyMemory<byte> segment in buffer)
        {
            output.Write(segment.Span);
        }

        FlushResult flush = await output.FlushAsync();
        input.AdvanceTo(buffer.End);
        if (result.IsCompleted || flush.IsCompleted)
        {
            break;
        }
    }
}
