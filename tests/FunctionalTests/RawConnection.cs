using System;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// A client's stream connection below HTTP, to a server on loopback TCP or on a Unix socket: send,
/// half-close, read to the end or to the reset, reset. Every call observes the test's
/// cancellation; none has a timeout of its own (a test that wants one says so with
/// <see cref="TestWait.DefaultTimeout(Task)"/>). Errors are the socket's own
/// (<see cref="SocketException"/>), as tests that expect a reset look for them.
/// </summary>
public sealed class RawConnection : IDisposable
{
    private const int ReadSize = 64 * 1024;

    /// <summary>Takes over a socket the test connected itself (one that had to exist before connecting, say); disposing closes it.</summary>
    public RawConnection(Socket socket) => Socket = socket;

    /// <summary>The socket, for what a test reads off it (its local endpoint) or does that this type does not.</summary>
    public Socket Socket { get; }

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    /// <summary>Connects to <paramref name="port"/> on 127.0.0.1.</summary>
    /// <param name="port">The server's port.</param>
    /// <param name="configure">Socket options set before connecting (buffer sizes must be, for the window the handshake advertises).</param>
    public static Task<RawConnection> ConnectAsync(int port, Action<Socket>? configure = null)
        => ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), configure);

    /// <summary>Connects to the Unix domain socket at <paramref name="path"/>.</summary>
    /// <inheritdoc cref="ConnectAsync(int, Action{Socket}?)" path="/param[@name='configure']"/>
    public static Task<RawConnection> ConnectUnixAsync(string path, Action<Socket>? configure = null)
        => ConnectAsync(new UnixDomainSocketEndPoint(path), configure);

    /// <summary>Connects a stream socket of <paramref name="endPoint"/>'s family (TCP for IP addresses).</summary>
    /// <inheritdoc cref="ConnectAsync(int, Action{Socket}?)" path="/param[@name='configure']"/>
    public static async Task<RawConnection> ConnectAsync(EndPoint endPoint, Action<Socket>? configure = null)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, endPoint.AddressFamily == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
        try
        {
            configure?.Invoke(socket);
            await socket.ConnectAsync(endPoint, Token).ConfigureAwait(false);
            return new RawConnection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends every byte of <paramref name="data"/>; returns how many were sent.</summary>
    public Task<int> SendAsync(ReadOnlyMemory<byte> data) => Socket.SendAsync(data, SocketFlags.None, Token).AsTask();

    /// <summary>Sends <paramref name="text"/> as ASCII (a request line and headers).</summary>
    public Task<int> SendAsync(string text) => SendAsync(Encoding.ASCII.GetBytes(text));

    /// <summary>One receive: what the kernel has, up to <paramref name="buffer"/>'s length; 0 at the end of the stream.</summary>
    public Task<int> ReceiveAsync(Memory<byte> buffer) => Socket.ReceiveAsync(buffer, SocketFlags.None, Token).AsTask();

    /// <summary>Half-closes: the peer reads the end of the stream (FIN); this side can still read.</summary>
    public void HalfClose() => Socket.Shutdown(SocketShutdown.Send);

    /// <summary>Closes with a reset (SO_LINGER 0), as a client that gives up mid-exchange does.</summary>
    public void Reset()
    {
        Socket.LingerState = new LingerOption(true, 0);
        Socket.Dispose();
    }

    /// <summary>Reads until the peer's FIN; a reset throws (<see cref="SocketError.ConnectionReset"/>).</summary>
    public async Task<byte[]> ReadToEndAsync()
    {
        using var all = new MemoryStream();
        await ReadIntoAsync(all).ConfigureAwait(false);
        return all.ToArray();
    }

    /// <summary>As <see cref="ReadToEndAsync"/>, as ASCII text (HTTP/1.1 responses).</summary>
    public async Task<string> ReadToEndAsStringAsync() => Encoding.ASCII.GetString(await ReadToEndAsync().ConfigureAwait(false));

    /// <summary>Reads until the peer's FIN or reset: the bytes that came, and whether it ended by reset.</summary>
    public async Task<(byte[] Data, bool Reset)> ReadToEndOrResetAsync()
    {
        using var all = new MemoryStream();
        try
        {
            await ReadIntoAsync(all).ConfigureAwait(false);
            return (all.ToArray(), false);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
        {
            return (all.ToArray(), true);
        }
    }

    /// <summary>
    /// Sends <paramref name="payload"/> (in pieces of <paramref name="chunk"/> bytes when given),
    /// half-closes, and reads to the end meanwhile (so an echo cannot stall with full buffers both
    /// ways): what came back.
    /// </summary>
    public async Task<byte[]> EchoAsync(ReadOnlyMemory<byte> payload, int chunk = int.MaxValue)
    {
        Task<byte[]> echo = ReadToEndAsync();
        for (int offset = 0; offset < payload.Length; offset += chunk)
        {
            await SendAsync(payload.Slice(offset, Math.Min(chunk, payload.Length - offset))).ConfigureAwait(false);
        }

        HalfClose();
        return await echo.ConfigureAwait(false);
    }

    public void Dispose() => Socket.Dispose();

    private async Task ReadIntoAsync(MemoryStream all)
    {
        var buffer = new byte[ReadSize];
        int n;
        while ((n = await ReceiveAsync(buffer).ConfigureAwait(false)) > 0)
        {
            all.Write(buffer, 0, n);
        }
    }
}
