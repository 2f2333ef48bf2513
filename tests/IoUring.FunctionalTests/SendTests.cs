using System;
using System.IO;
using System.Linq;
using System.Net.Http;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using IoUring.Transport.Internal;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Sends: zero copy, sends the kernel takes in parts, and a send the ring cannot submit.</summary>
/// <remarks>In the isolated collection, as before the split: one of them counts the process's descriptors and threads.</remarks>
[Collection(IsolatedCollection.Name)]
public class SendTests
{
    [Fact]
    public async Task ZeroCopySendsDeliverLargeResponsesIntact()
    {
        const int Size = 8 * 1024 * 1024;
        byte[] expected = new byte[Size];
        new Random(11).NextBytes(expected);
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => o.ZeroCopySendThreshold = 16 * 1024,
            app: async context =>
            {
                for (int offset = 0; offset < Size; offset += 256 * 1024)
                {
                    await context.Response.Body.WriteAsync(expected.AsMemory(offset, 256 * 1024));
                }
            });
        int port = server.Port;
        using var client = new HttpClient();
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(expected, await client.GetByteArrayAsync($"http://127.0.0.1:{port}/", TestContext.Current.CancellationToken));
        }

        Assert.True(server.Group.Rings.Sum(r => r.ZeroCopySends) > 0, "no send went zero-copy");
    }

    /// <summary>
    /// Output written in pieces of 3,000 bytes, every send taken only in part by the kernel (the
    /// ring's short-send fault injection: what a full socket does now and then), so each continues
    /// where it stopped; with zero copy each part also waits for its notification. With a write
    /// buffer of one byte each write waits for its send, so every send is one pool block (a plain
    /// send, no iovecs); with the default, writes run ahead and sends gather several (a sendmsg).
    /// Every byte arrives in order and every block comes home.
    /// </summary>
    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 1)]
    [InlineData(false, 64 * 1024)]
    [InlineData(true, 64 * 1024)]
    public async Task SendsTakenInPartsDeliverEveryByteInOrder(bool zeroCopy, long maxWriteBufferSize)
    {
        const int Size = 1024 * 1024;
        const int Write = 3000;
        byte[] expected = new byte[Size];
        new Random(12).NextBytes(expected);
        IoUringServer server = await IoUringServer.StartAsync(
            o =>
            {
                o.RingCount = 1;
                o.ZeroCopySendThreshold = zeroCopy ? 1 : null;
                o.MaxWriteBufferSize = maxWriteBufferSize;
            },
            listen => listen.Run(async connection =>
            {
                for (int offset = 0; offset < Size; offset += Write)
                {
                    await connection.Transport.Output.WriteAsync(expected.AsMemory(offset, Math.Min(Write, Size - offset)));
                }
            }));
        RingGroup group = server.Group;
        RingThread ring = Assert.Single(group.Rings);
        TransportTestHooks hooks = IoUringServer.HooksOf(server.Services);
        hooks.ShortSends = true;
        try
        {
            using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
            byte[] received = await connection.ReadToEndAsync();
            Assert.Equal(Size, received.Length);
            Assert.True(expected.AsSpan().SequenceEqual(received), "the bytes arrived changed or out of order");
            Assert.True(ring.PartialSends > 0, "no send went out in parts");
            Assert.Equal(zeroCopy, ring.ZeroCopySends > 0);
        }
        finally
        {
            hooks.ShortSends = false;
            await server.DisposeAsync();
        }

        Assert.Equal(0, group.MemoryPool.RentedBlocks);
    }

    [Fact]
    public async Task ASendTheRingCannotSubmitEndsThatConnectionOnly()
    {
        var appDone = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await TestServer.StartAsync(
            app => app.Run(async context =>
            {
                if (context.Request.Path != "/big")
                {
                    await context.Response.WriteAsync("ok");
                    return;
                }

                try
                {
                    var chunk = new byte[64 * 1024];
                    for (int i = 0; i < 256; i++)
                    {
                        await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
                    }

                    appDone.TrySetResult(null);
                }
                catch (Exception ex)
                {
                    appDone.TrySetResult(ex);
                }
            }));
        RingGroup group = IoUringServer.FactoryOf(server.Services).Group!;
        TransportTestHooks hooks = IoUringServer.HooksOf(server.Services);

        using (RawConnection connection = await RawConnection.ConnectAsync(server.Port))
        {
            await connection.SendAsync("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.True(await connection.ReceiveAsync(new byte[64 * 1024]) > 0);

            // The response is far larger than the socket buffers: sends are still to come. Make them fail.
            hooks.FailSendSubmissions = true;

            // To the end or the reset, whichever ends the connection.
            (byte[] rest, _) = await connection.ReadToEndOrResetAsync().DefaultTimeout();
            Assert.True(rest.Length < 256 * 64 * 1024, "the whole response arrived although its sends failed");
        }

        // The application's writes ended (Kestrel drops or fails writes to an aborted connection)
        // instead of waiting forever on a send that will never complete, and the server serves on.
        await appDone.Task.DefaultTimeout();
        hooks.FailSendSubmissions = false;
        foreach (RingThread ring in group.Rings)
        {
            Assert.True(ring.IsRunning);
        }

        using (HttpClient client = server.CreateClient())
        {
            Assert.Equal("ok", await client.GetStringAsync("/", TestContext.Current.CancellationToken));
        }

        await server.DisposeAsync();
        Assert.Equal(0, group.MemoryPool.RentedBlocks);
    }
}
