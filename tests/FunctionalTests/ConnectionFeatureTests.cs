using System.Collections.Generic;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
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

    [Fact]
    public async Task ConnectionMiddlewareAddsReplacesAndRemovesFeatures()
    {
        string? failed = null;
        await using var server = await TestServer.StartAsync(
            app => app.Run(context => context.Response.WriteAsync(failed ?? "middleware did not run")),
            kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Use(next => connection =>
            {
                IFeatureCollection features = connection.Features;
                var failures = new List<string>();
                void Check(bool condition, string what)
                {
                    if (!condition)
                    {
                        failures.Add(what);
                    }
                }

                Check(features.Get<IConnectionIdFeature>()?.ConnectionId == connection.ConnectionId, "id feature");
                Check(features.Get<IConnectionTransportFeature>()?.Transport == connection.Transport, "transport feature");
                Check(ReferenceEquals(features.Get<IConnectionItemsFeature>()?.Items, connection.Items), "items feature");
                Check(features.Get<IMarkerFeature>() is null, "no marker before it is set");
                Check(features.Any(feature => feature.Key == typeof(IConnectionIdFeature)), "id feature enumerated");

                int revision = features.Revision;
                var marker = new MarkerFeature();
                features.Set<IMarkerFeature>(marker);
                Check(features.Revision != revision, "revision changes on set");
                Check(ReferenceEquals(features.Get<IMarkerFeature>(), marker), "marker added");
                Check(features.Any(feature => feature.Key == typeof(IMarkerFeature) && ReferenceEquals(feature.Value, marker)), "marker enumerated");

                IConnectionItemsFeature original = features.Get<IConnectionItemsFeature>()!;
                var replacement = new ItemsFeature();
                features.Set<IConnectionItemsFeature>(replacement);
                Check(ReferenceEquals(features.Get<IConnectionItemsFeature>(), replacement), "items feature replaced");
                Check(features.Count(feature => feature.Key == typeof(IConnectionItemsFeature)) == 1, "replaced feature enumerated once");
                features.Set<IConnectionItemsFeature>(null);
                Check(features.Get<IConnectionItemsFeature>() is null, "items feature removed");
                Check(features.All(feature => feature.Key != typeof(IConnectionItemsFeature)), "removed feature not enumerated");
                features.Set(original);
                Check(ReferenceEquals(features.Get<IConnectionItemsFeature>(), original), "items feature restored");

                features.Set<IMarkerFeature>(null);
                Check(features.Get<IMarkerFeature>() is null, "marker removed");
                Check(features.All(feature => feature.Key != typeof(IMarkerFeature)), "removed marker not enumerated");
                failed = failures.Count == 0 ? "ok" : string.Join(", ", failures);
                return next(connection);
            })));
        using HttpClient client = server.CreateClient();
        Assert.Equal("ok", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
    }

    private interface IMarkerFeature;

    private sealed class MarkerFeature : IMarkerFeature;

    private sealed class ItemsFeature : IConnectionItemsFeature
    {
        public IDictionary<object, object?> Items { get; set; } = new Dictionary<object, object?>();
    }
}
