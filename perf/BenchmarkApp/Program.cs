using System;
using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Linq;
using System.Net;
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
// Endpoints: /plaintext, /json, /64k, /delay (awaits 1 ms, then plaintext), /cpu (0.5 ms of CPU,
// then plaintext), /stats.
// GET /stats on the HTTP/1.1 port prints the transport's metrics (?gc: after a full GC), for perf/soak.sh.
// Other io_uring options bind as usual, e.g. --IoUring:RingCount 2 or IoUring__RingCount=2.
var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
builder.Logging.AddConsole();
builder.Logging.SetMinimumLevel(LogLevel.Warning);

string transport = builder.Configuration.GetValue("transport", "iouring")!.ToUpperInvariant();
bool inline = builder.Configuration.GetValue("inline", false);
int port = builder.Configuration.GetValue("port", 5100);
int h2Port = builder.Configuration.GetValue("h2port", 5101);
int echoPort = builder.Configuration.GetValue("echoport", 5102);

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

builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.AddServerHeader = false;
    kestrel.Listen(IPAddress.Loopback, port);
    kestrel.Listen(IPAddress.Loopback, h2Port, o => o.Protocols = HttpProtocols.Http2);
    kestrel.Listen(IPAddress.Loopback, echoPort, o => o.Run(EchoAsync));
});

var app = builder.Build();
using var stats = new TransportStats();
app.Run(context => context.Request.Path.Value == "/stats" ? StatsAsync(context, stats) : HandleAsync(context));
await app.StartAsync();

// One line on stdout that perf/run.sh checks: which transport really serves.
IoUringTransportFactory? ioUring = app.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().SingleOrDefault();
string serving = transport == "SOCKETS"
    ? "sockets"
    : ioUring!.IsUsingIoUring ? "iouring" : "sockets (fallback)";
string dispatch = serving == "iouring" ? $" dispatch={ioUring!.ActiveDispatch}" : "";
Console.WriteLine($"BenchmarkApp transport={serving} inline={(inline ? "true" : "false")} http1={port} h2={h2Port} echo={echoPort} processors={Environment.ProcessorCount}{dispatch}");

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
