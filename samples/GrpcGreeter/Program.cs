using Grpc.Core;
using GrpcGreeter;
using IoUring.Transport;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

// gRPC on io_uring: the one line, and HTTP/2 over cleartext (prior knowledge, as gRPC clients
// speak it without TLS). Put TLS in front, or use ListenOptions.UseHttps, for anything public.
var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseIoUringTransport();
builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen => listen.Protocols = HttpProtocols.Http2));
builder.Services.AddGrpc();

var app = builder.Build();
app.MapGrpcService<GreeterService>();

await app.StartAsync();
var factory = app.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().Single();
Console.WriteLine($"Transport: {(factory.IsUsingIoUring ? "io_uring" : "Sockets (fallback)")}");
Console.WriteLine($"Listening on: {string.Join(", ", app.Urls)}");
await app.WaitForShutdownAsync();

internal sealed class GreeterService : Greeter.GreeterBase
{
    public override Task<HelloReply> SayHello(HelloRequest request, ServerCallContext context)
        => Task.FromResult(new HelloReply { Message = $"Hello, {request.Name}!" });

    public override async Task CountTo(CountRequest request, IServerStreamWriter<CountReply> responseStream, ServerCallContext context)
    {
        for (int value = 1; value <= request.To && !context.CancellationToken.IsCancellationRequested; value++)
        {
            await responseStream.WriteAsync(new CountReply { Value = value });
        }
    }
}
