using System.Linq;
using System.Net;
using System.Net.Http;
using System.Threading.Tasks;
using IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Behaviour only the io_uring transport has: it really runs, its memory comes home, its switches work.</summary>
public class IoUringTransportTests
{
    [Fact]
    public async Task ConnectionsRunOnIoUringRings()
    {
        string? connectionType = null;
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            await context.Response.WriteAsync("ok");
        }), kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen =>
        {
            listen.Use(next => async connection =>
            {
                connectionType = connection.GetType().Name;
                await next(connection);
            });
        }));
        using HttpClient client = server.CreateClient();
        Assert.Equal("ok", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
        Assert.Equal("IoUringConnection", connectionType);
        IoUringTransportFactory factory = server.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().Single();
        Assert.True(factory.IsUsingIoUring);
    }
}
