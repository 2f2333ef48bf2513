using System.Net;
using System.Net.Http;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Connection features and socket options as Kestrel's Sockets transport sets them.</summary>
public class ConnectionFeatureTests
{
    [Fact]
    public async Task AcceptedTcpConnectionsHaveNoDelayByDefault()
    {
        await using var server = await TestServer.StartAsync(app => app.Run(context =>
        {
            var socket = context.Features.Get<IConnectionSocketFeature>()!.Socket;
            return context.Response.WriteAsync(socket.NoDelay ? "nodelay" : "nagle");
        }));
        using HttpClient client = server.CreateClient();
        Assert.Equal("nodelay", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task ItemsSetByConnectionMiddlewareAndTheConnectionIdReachTheApplication()
    {
        string? middlewareId = null;
        await using var server = await TestServer.StartAsync(
            app => app.Run(context =>
            {
                var items = context.Features.Get<IConnectionItemsFeature>()!.Items;
                string id = context.Features.Get<IConnectionIdFeature>()!.ConnectionId;
                return context.Response.WriteAsync($"{items["tag"]}|{id == middlewareId}|{context.Connection.Id == id}");
            }),
            kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Use(next => connection =>
            {
                connection.Items["tag"] = "from middleware";
                middlewareId = connection.ConnectionId;
                return next(connection);
            })));
        using HttpClient client = server.CreateClient();
        Assert.Equal("from middleware|True|True", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
    }
}
