using System;
using System.IO.Pipelines;
using System.Net;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Connections;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>An application that stops reading: reception pauses for that connection only.</summary>
public class ReceiveBackpressureTests
{
    [Fact]
    public async Task StalledReaderDoesNotStarveFastConnections()
    {
        var stalledConnectionSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var releaseStalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stalledTotal = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await TestServer.StartAsync(_ => { }, kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Run(async connection =>
        {
            PipeReader input = connection.Transport.Input;
            ReadResult first = await input.ReadAsync();
            bool stall = first.Buffer.FirstSpan[0] == (byte)'S';
            input.AdvanceTo(first.Buffer.Start); // examine nothing yet
            if (stall)
            {
                // Read nothing until released: the transport must stop taking data for this connection.
                stalledConnectionSeen.TrySetResult();
                await releaseStalled.Task;
                long total = 0;
                while (true)
                {
                    ReadResult result = await input.ReadAsync();
                    total += result.Buffer.Length;
                    input.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                    {
                        break;
                    }
                }

                stalledTotal.TrySetResult(total);
                return;
            }

            await ConnectionMiddlewareTests.EchoAsync(connection);
        })));

        // The stalled client keeps sending until a send makes no progress for a while: the server
        // stopped reading. (No event says "the peer stopped reading"; the assertion is the bound.)
        using RawConnection stalled = await RawConnection.ConnectAsync(server.Port, socket => socket.SendBufferSize = 64 * 1024);
        await stalled.SendAsync("S");
        await stalledConnectionSeen.Task.DefaultTimeout();
        var chunk = new byte[64 * 1024];
        long sent = 1;
        Task<int> pendingSend;
        while (true)
        {
            pendingSend = stalled.SendAsync(chunk);
            Task winner = await Task.WhenAny(pendingSend, Task.Delay(TimeSpan.FromSeconds(2), TestContext.Current.CancellationToken));
            if (winner != pendingSend)
            {
                break; // the send blocked: the server's receive is paused
            }

            sent += await pendingSend;
            Assert.True(sent < 512L * 1024 * 1024, "the server kept receiving for a connection whose application reads nothing");
        }

        // Meanwhile other connections on every ring are served at full speed.
        var fast = new Task[20];
        for (int i = 0; i < fast.Length; i++)
        {
            fast[i] = Task.Run(async () =>
            {
                using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
                var payload = new byte[256 * 1024];
                payload[0] = (byte)'F';
                Assert.Equal(payload.Length, (await connection.EchoAsync(payload)).Length);
            }, TestContext.Current.CancellationToken);
        }

        await Task.WhenAll(fast).DefaultTimeout(times: 2);

        // Released, the stalled connection delivers every byte.
        releaseStalled.SetResult();
        sent += await pendingSend.DefaultTimeout();
        stalled.HalfClose();
        Assert.Equal(sent, await stalledTotal.Task.DefaultTimeout(times: 2));
    }
}
