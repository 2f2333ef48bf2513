using System;
using System.IO.Pipelines;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>Connection-level handlers (ListenOptions.Run) over the transport, with half-close.</summary>
public class ConnectionMiddlewareTests
{
    internal static void Echo(ListenOptions listen) => listen.Run(EchoAsync);

    /// <summary>Echoes every byte back until the peer's FIN, then completes the output.</summary>
    internal static Task EchoAsync(ConnectionContext connection) => EchoAsync(connection, afterEachRead: null);

    /// <summary>As <see cref="EchoAsync(ConnectionContext)"/>, awaiting <paramref name="afterEachRead"/> after each read (a slow application).</summary>
    internal static async Task EchoAsync(ConnectionContext connection, Func<Task>? afterEachRead)
    {
        PipeReader input = connection.Transport.Input;
        PipeWriter output = connection.Transport.Output;
        while (true)
        {
            ReadResult result = await input.ReadAsync();
            foreach (ReadOnlyMemory<byte> segment in result.Buffer)
            {
                await output.WriteAsync(segment);
            }

            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;
            }

            if (afterEachRead is not null)
            {
                await afterEachRead();
            }
        }

        await output.CompleteAsync();
    }

    [Fact]
    public async Task EchoWithHalfCloseReturnsEveryByte()
    {
        await using var server = await TestServer.StartAsync(_ => { }, kestrel => kestrel.Listen(IPAddress.Loopback, 0, Echo));
        using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
        var payload = new byte[5 * 1024 * 1024 + 17];
        new Random(3).NextBytes(payload);

        // Then the half-close: the server sees the end of its input, then finishes echoing.
        byte[] echoed = await connection.EchoAsync(payload, chunk: 100_000).DefaultTimeout(times: 2);
        Assert.Equal(payload.Length, echoed.Length);
        Assert.Equal(payload, echoed);
    }

    [Fact]
    public async Task ListenLocalhostServesIPv4AndIPv6()
    {
        int port = GetFreePort();
        await using var server = await TestServer.StartAsync(_ => { }, kestrel => kestrel.ListenLocalhost(port, Echo));
        foreach (IPAddress address in new[] { IPAddress.Loopback, IPAddress.IPv6Loopback })
        {
            using RawConnection connection = await RawConnection.ConnectAsync(new IPEndPoint(address, port));
            Assert.Equal("ping"u8.ToArray(), await connection.EchoAsync("ping"u8.ToArray()));
        }
    }

    [Fact]
    public async Task ConnectionClosedFiresWhenThePeerCloses()
    {
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var registered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await TestServer.StartAsync(_ => { }, kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Run(async connection =>
        {
            connection.ConnectionClosed.Register(() => closed.TrySetResult());
            registered.TrySetResult();
            // Read until the peer's FIN, as an application would, without closing first.
            while (true)
            {
                ReadResult read = await connection.Transport.Input.ReadAsync();
                connection.Transport.Input.AdvanceTo(read.Buffer.End); // a PipeReader must be advanced before the next read
                if (read.IsCompleted)
                {
                    break;
                }
            }

            await closed.Task;
        })));
        using (await RawConnection.ConnectAsync(server.Port))
        {
            await registered.Task.DefaultTimeout();
        }

        await closed.Task.DefaultTimeout();
    }

    [Fact]
    public async Task ConnectionClosedFiresForEveryConnectionTheApplicationEnds()
    {
        const int Connections = 1000;
        int fired = 0;
        var allFired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await TestServer.StartAsync(_ => { }, kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Run(async connection =>
        {
            connection.ConnectionClosed.Register(() =>
            {
                if (Interlocked.Increment(ref fired) == Connections)
                {
                    allFired.TrySetResult();
                }
            });
            await connection.Transport.Output.WriteAsync("bye"u8.ToArray());
            // Returning ends and disposes the connection; the callback must still run, once.
        })));
        using var gate = new SemaphoreSlim(100);
        await Task.WhenAll(Enumerable.Range(0, Connections).Select(async _ =>
        {
            await gate.WaitAsync(TestContext.Current.CancellationToken);
            try
            {
                using RawConnection connection = await RawConnection.ConnectAsync(server.Port);
                Assert.Equal("bye"u8.ToArray(), await connection.ReadToEndAsync());
            }
            finally
            {
                gate.Release();
            }
        }));

        await allFired.Task.DefaultTimeout();
        Assert.Equal(Connections, Volatile.Read(ref fired));
    }

    internal static int GetFreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp) { DualMode = true };
        probe.Bind(new IPEndPoint(IPAddress.IPv6Any, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }
}
