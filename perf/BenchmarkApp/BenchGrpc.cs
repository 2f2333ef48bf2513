using System;
using System.Runtime.CompilerServices;
using System.Threading.Tasks;
using BenchmarkApp.Grpc;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace BenchmarkApp;

/// <summary>
/// gRPC, only with --grpc true. gRPC needs endpoint routing, and routing would run before the
/// terminal middleware on every request of every port, so the other scenarios run without it. Not
/// inlined, so a server without --grpc never loads the gRPC assemblies either.
/// </summary>
internal static class BenchGrpc
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void AddServices(IServiceCollection services) => services.AddGrpc();

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Map(WebApplication app)
    {
        // Routing and endpoint execution placed explicitly: the app ends in a terminal middleware,
        // so the endpoint middleware the host would append after it would never run.
        app.MapGrpcService<BenchService>();
        app.UseRouting();
        app.UseEndpoints(_ => { });
    }
}

/// <summary>The two calls of bench.proto.</summary>
internal sealed class BenchService : Bench.BenchBase
{
    // Longest stream a call may ask for: a bound, not a figure any scenario uses.
    private const int MaxCount = 100_000;

    private static readonly Payload s_message = new() { Body = ByteString.CopyFrom(Payloads.HelloWorld) };

    public override Task<Payload> Unary(Payload request, ServerCallContext context) => Task.FromResult(request);

    public override async Task ServerStream(StreamRequest request, IServerStreamWriter<Payload> responseStream, ServerCallContext context)
    {
        int count = Math.Clamp(request.Count, 0, MaxCount);
        for (int i = 0; i < count; i++)
        {
            await responseStream.WriteAsync(s_message, context.CancellationToken);
        }
    }
}
