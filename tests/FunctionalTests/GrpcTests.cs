using System.Linq;
using System.Net;
using System.Threading.Tasks;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using IoUring.FunctionalTests.Grpc;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace IoUring.FunctionalTests;

public class GrpcTests
{
    [Fact]
    public async Task UnaryServerStreamingAndDuplexCalls()
    {
        await using var server = await TestServer.StartAsync(
            app =>
            {
                app.UseRouting();
                app.UseEndpoints(endpoints => endpoints.MapGrpcService<EchoService>());
            },
            kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2),
            services => services.AddGrpc());

        using GrpcChannel channel = GrpcChannel.ForAddress(server.BaseAddress);
        var client = new Echo.EchoClient(channel);

        EchoMessage unary = await client.UnaryAsync(new EchoMessage { Text = "ping", Payload = ByteString.CopyFrom(new byte[100_000]) }, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal("ping", unary.Text);
        Assert.Equal(100_000, unary.Payload.Length);

        using (AsyncServerStreamingCall<EchoMessage> stream = client.ServerStream(new EchoMessage { Text = "n", Index = 100 }, cancellationToken: TestContext.Current.CancellationToken))
        {
            var indexes = await stream.ResponseStream.ReadAllAsync(TestContext.Current.CancellationToken).Select(m => m.Index).ToListAsync(TestContext.Current.CancellationToken);
            Assert.Equal(Enumerable.Range(0, 100), indexes);
        }

        using AsyncDuplexStreamingCall<EchoMessage, EchoMessage> duplex = client.Duplex(cancellationToken: TestContext.Current.CancellationToken);
        for (int i = 0; i < 50; i++)
        {
            await duplex.RequestStream.WriteAsync(new EchoMessage { Index = i }, TestContext.Current.CancellationToken);
            Assert.True(await duplex.ResponseStream.MoveNext(TestContext.Current.CancellationToken));
            Assert.Equal(i, duplex.ResponseStream.Current.Index);
        }

        await duplex.RequestStream.CompleteAsync();
        Assert.False(await duplex.ResponseStream.MoveNext(TestContext.Current.CancellationToken));
    }
}

internal sealed class EchoService : Echo.EchoBase
{
    public override Task<EchoMessage> Unary(EchoMessage request, ServerCallContext context) => Task.FromResult(request);

    public override async Task ServerStream(EchoMessage request, IServerStreamWriter<EchoMessage> responseStream, ServerCallContext context)
    {
        for (int i = 0; i < request.Index; i++)
        {
            await responseStream.WriteAsync(new EchoMessage { Text = request.Text, Index = i });
        }
    }

    public override async Task Duplex(IAsyncStreamReader<EchoMessage> requestStream, IServerStreamWriter<EchoMessage> responseStream, ServerCallContext context)
    {
        await foreach (EchoMessage message in requestStream.ReadAllAsync())
        {
            await responseStream.WriteAsync(message);
        }
    }
}
