using System.Net.Http;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Clients that reset their connections at every moment: only those connections end.</summary>
public class ResetTests
{
    [Fact]
    public async Task ClientsResettingMidRequestAndMidResponseLeaveTheServerServing()
    {
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            if (context.Request.Path == "/big")
            {
                var chunk = new byte[64 * 1024];
                for (int i = 0; i < 64; i++)
                {
                    await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
                }

                return;
            }

            context.Response.ContentLength = 2;
            await context.Response.WriteAsync("ok");
        }));

        for (int round = 0; round < 5; round++)
        {
            var tasks = new Task[200];
            for (int i = 0; i < tasks.Length; i++)
            {
                int kind = i % 4;
                tasks[i] = Task.Run(async () =>
                {
                    using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
                    switch (kind)
                    {
                        case 0: // reset right after connecting
                            break;
                        case 1: // reset mid-request (headers incomplete)
                            await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n");
                            break;
                        case 2: // reset before reading a small response
                            await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                            break;
                        default: // reset mid-response
                            await connection.SendAsync("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
                            await connection.ReceiveAsync(new byte[1000]);
                            break;
                    }

                    connection.Reset();
                }, TestContext.Current.CancellationToken);
            }

            await Task.WhenAll(tasks);
            using HttpClient client = server.CreateClient();
            Assert.Equal("ok", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
        }
    }
}
