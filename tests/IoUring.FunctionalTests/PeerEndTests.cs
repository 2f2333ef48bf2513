using System;
using System.IO;
using System.Threading.Tasks;
using IoUring.Transport.Internal;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// A peer's end reaches the application however it arrives: here together with the data, both in
/// the socket before the connection's first receive looks (TransportTestHooks.ReceivePollFirst makes
/// that order certain). On AF_UNIX a multishot receive takes the data and misses the end on Linux
/// 6.18 and 7.2 (IoUringConnection.Receive.cs), so the connection, and a client waiting for the
/// server to finish, would wait for ever; the transport receives there one at a time.
/// </summary>
[Collection(IsolatedCollection.Name)]
public class PeerEndTests
{
    [Theory]
    [InlineData("unix")]
    [InlineData("tcp")]
    public async Task AnEndThatCameWithTheDataEndsTheConnection(string endpoint)
    {
        string path = Path.Combine(Path.GetTempPath(), $"iouring-end-{Guid.NewGuid():N}.sock");
        try
        {
            await using IoUringServer server = await IoUringServer.StartAsync(
                o => { o.RingCount = 1; o.TestHooks = new TransportTestHooks { ReceivePollFirst = true }; },
                ConnectionMiddlewareTests.Echo,
                kestrel: k => k.ListenUnixSocket(path, ConnectionMiddlewareTests.Echo));
            RingThread ring = server.Group.Rings[0];

            for (int i = 0; i < 3; i++)
            {
                // The client connects, sends and half-closes while the ring thread is held: the
                // ring accepts the connection afterwards and arms its receive with all of it there.
                using RawConnection client = await RingHold.WhileHeldAsync(ring, async () =>
                {
                    RawConnection c = endpoint == "unix" ? await RawConnection.ConnectUnixAsync(path) : await RawConnection.ConnectAsync(server.Port);
                    await c.SendAsync("data");
                    c.HalfClose();
                    return c;
                });

                // The echo middleware answers and returns at the end of its input; the server then
                // closes, which is the client's end.
                Assert.Equal("data", await client.ReadToEndAsStringAsync().DefaultTimeout());
            }
        }
        finally
        {
            File.Delete(path);
        }
    }
}
