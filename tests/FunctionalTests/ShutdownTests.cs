using System;
using System.Net.Http;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace IoUring.FunctionalTests;

public class ShutdownTests
{
    [Fact]
    public async Task GracefulShutdownCompletesTheRequestInFlight()
    {
        var requestStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        TestServer server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            requestStarted.TrySetResult();
            await release.Task;
            await context.Response.WriteAsync("finished");
        }));
        await using (server)
        {
            using HttpClient client = server.CreateClient();
            Task<string> request = client.GetStringAsync("/", TestContext.Current.CancellationToken);
            await requestStarted.Task.WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);

            Task stopping = server.StopAsync(TimeSpan.FromSeconds(30));
            Assert.False(stopping.IsCompleted, "stop must wait for the request in flight");

            Assert.False(request.IsCompleted);
            release.SetResult();
            Assert.Equal("finished", await request.WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
            await stopping.WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        }
    }
}
