using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Xunit;

namespace IoUring.FunctionalTests;

public class BackpressureTests
{
    /// <summary>
    /// A client that stops reading: the server's writes must stall once the transport's write
    /// buffer and the kernel's socket buffers are full, so what the server holds stays bounded;
    /// then every byte still arrives once the client reads.
    /// </summary>
    [Fact]
    public async Task SlowReaderStallsTheWriterWithBoundedBuffering()
    {
        const int Chunk = 64 * 1024;
        const long Total = 256L * 1024 * 1024;
        long written = 0;
        var stalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await TestServer.StartAsync(app => app.Run(async context =>
        {
            context.Features.Get<IHttpMinResponseDataRateFeature>()!.MinDataRate = null;
            var chunk = new byte[Chunk];
            while (Interlocked.Read(ref written) < Total)
            {
                ValueTask write = context.Response.Body.WriteAsync(chunk);
                if (!write.IsCompleted)
                {
                    stalled.TrySetResult(); // backpressure reached the application
                }

                await write;
                Interlocked.Add(ref written, Chunk);
            }
        }));

        using RawConnection connection = await RawConnection.ConnectAsync(server.Port, socket => socket.ReceiveBufferSize = 64 * 1024);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");

        await stalled.Task.DefaultTimeout();
        // While stalled, the server has handed out far less than the response: the write buffer
        // (64 KiB by default) plus the kernel's socket buffers, not the 256 MiB the app wants to send.
        long atStall = Interlocked.Read(ref written);
        Assert.True(atStall < 32L * 1024 * 1024, $"{atStall} bytes written before the first stall");

        long received = 0;
        var buffer = new byte[1 << 20];
        int n;
        while ((n = await connection.ReceiveAsync(buffer)) > 0)
        {
            received += n;
        }

        Assert.Equal(Total, Interlocked.Read(ref written));
        Assert.True(received > Total, "headers and chunk framing come on top of the body");
    }
}
