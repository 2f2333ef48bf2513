using System;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using IoUring.Interop;

namespace IoUring.Sockets;

// Checked socket operations on raw file descriptors. Every failure becomes a SocketException whose
// SocketErrorCode matches what System.Net.Sockets would report for the same errno, so code written
// against the managed Sockets transport (Kestrel's AddressInUseException translation, reset
// handling) keeps working. The descriptors are plain ints: ownership and lifetime belong to the
// caller (the transport closes them, usually through io_uring).
internal static unsafe class LinuxSocket
{
    // Kernel limit on classic BPF program length (BPF_MAXINSNS, linux/bpf_common.h).
    private const int MaxBpfInstructions = 4096;

    // Every socket is created non-blocking, because readiness and completion come from io_uring and
    // a blocking call would stall a ring thread, and close-on-exec, so a child process started by the
    // application never inherits a listener or a connection.
    public static int Create(AddressFamily family) => Create(family, nonBlocking: true);

    // A socket to connect through io_uring (IORING_OP_CONNECT) is left blocking, as accepted ones are:
    // the ring waits for the connect by polling, and a blocking socket's connect retried from
    // io_uring's worker (io-wq) completes the connect instead of reporting EINPROGRESS.
    public static int Create(AddressFamily family, bool nonBlocking)
    {
        int domain = family switch
        {
            AddressFamily.InterNetwork => SocketInterop.AF_INET,
            AddressFamily.InterNetworkV6 => SocketInterop.AF_INET6,
            AddressFamily.Unix => SocketInterop.AF_UNIX,
            _ => throw new ArgumentOutOfRangeException(
                nameof(family), family, "Only InterNetwork, InterNetworkV6 and Unix stream sockets are supported."),
        };

        int type = SocketInterop.SOCK_STREAM | SocketInterop.SOCK_CLOEXEC | (nonBlocking ? SocketInterop.SOCK_NONBLOCK : 0);
        int fd = SocketInterop.Socket(domain, type, 0);
        if (fd < 0)
        {
            throw SocketErrors.LastError($"socket({family})");
        }

        return fd;
    }

    // Binds, listens and returns a listening descriptor configured the way Kestrel's Sockets transport
    // configures its listen socket on Linux, so switching transports does not change bind semantics:
    //  - IPv6Any ([::]) is dual mode, accepting IPv4 clients as IPv4-mapped addresses (Kestrel sets
    //    Socket.DualMode for exactly this address);
    //  - TCP listeners get SO_REUSEADDR, because System.Net.Sockets sets it on every TCP socket it binds
    //    on Unix: a restarted server can rebind while old connections sit in TIME_WAIT, and a port with a
    //    live listener is still refused with EADDRINUSE;
    //  - SO_REUSEPORT only when asked, to let several listeners (one per ring) share a port;
    //  - a Unix socket path is not unlinked first: Kestrel does not delete a stale file either, so a
    //    leftover file fails the bind with AddressAlreadyInUse. Deleting the file when the listener is
    //    disposed, as System.Net.Sockets.Socket.Dispose does for a path it bound, is the owner's job.
    // On any failure the descriptor is closed and the SocketException propagates.
    public static int CreateListener(EndPoint endPoint, int backlog, bool reusePort)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        AddressFamily family = endPoint switch
        {
            IPEndPoint ip => ip.AddressFamily,
            UnixDomainSocketEndPoint => AddressFamily.Unix,
            _ => throw new ArgumentException(
                $"Cannot listen on a {endPoint.GetType().Name}; only IPEndPoint and UnixDomainSocketEndPoint are supported.", nameof(endPoint)),
        };

        if (reusePort && family == AddressFamily.Unix)
        {
            // Linux refuses SO_REUSEPORT on AF_UNIX sockets (EOPNOTSUPP); failing here says why.
            throw new ArgumentException("SO_REUSEPORT applies to TCP listeners only; Linux does not support it for Unix domain sockets.", nameof(reusePort));
        }

        int fd = Create(family);
        try
        {
            if (endPoint is IPEndPoint ipEndPoint)
            {
                if (ipEndPoint.Address.Equals(IPAddress.IPv6Any))
                {
                    SetDualMode(fd, true);
                }

                SetReuseAddress(fd, true);
                if (reusePort)
                {
                    SetReusePort(fd, true);
                }
            }

            Bind(fd, endPoint);
            Listen(fd, backlog);
            return fd;
        }
        catch
        {
            CloseQuietly(fd);
            throw;
        }
    }

    public static void Bind(int fd, EndPoint endPoint)
    {
        byte* sockaddr = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.Write(endPoint, new Span<byte>(sockaddr, SocketAddressMarshal.MaxLength));
        if (SocketInterop.Bind(fd, sockaddr, length) != 0)
        {
            throw SocketErrors.LastError("bind", endPoint);
        }
    }

    public static void Listen(int fd, int backlog)
    {
        if (SocketInterop.Listen(fd, backlog) != 0)
        {
            throw SocketErrors.LastError("listen");
        }
    }

    // Returns the accepted descriptor (non-blocking, close-on-exec), or -1 when no connection is
    // pending. remoteEndPoint is null only if the peer address has no EndPoint form.
    public static int Accept(int fd, out EndPoint? remoteEndPoint)
    {
        byte* sockaddr = stackalloc byte[SocketAddressMarshal.MaxLength];
        while (true)
        {
            int length = SocketAddressMarshal.MaxLength;
            int accepted = SocketInterop.Accept4(fd, sockaddr, &length, SocketInterop.SOCK_NONBLOCK | SocketInterop.SOCK_CLOEXEC);
            if (accepted >= 0)
            {
                remoteEndPoint = SocketAddressMarshal.TryRead(new ReadOnlySpan<byte>(sockaddr, SocketAddressMarshal.MaxLength), length, out EndPoint? remote)
                    ? remote
                    : null;
                return accepted;
            }

            int errno = Marshal.GetLastPInvokeError();
            if (errno == Errno.EINTR)
            {
                continue;
            }

            if (errno == Errno.EAGAIN)
            {
                remoteEndPoint = null;
                return -1;
            }

            throw SocketErrors.CreateException(errno, "accept4");
        }
    }

    // Returns true when the connection is established on return (typical for Unix sockets) and false
    // when it is still in progress (EINPROGRESS, the norm for TCP on a non-blocking socket); the caller
    // then waits for writability and reads the outcome with GetSocketError.
    public static bool Connect(int fd, EndPoint endPoint)
    {
        byte* sockaddr = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.Write(endPoint, new Span<byte>(sockaddr, SocketAddressMarshal.MaxLength));
        if (SocketInterop.Connect(fd, sockaddr, length) == 0)
        {
            return true;
        }

        int errno = Marshal.GetLastPInvokeError();

        // An interrupted connect keeps going in the background, exactly like EINPROGRESS; calling
        // connect again would only report EALREADY.
        if (errno is Errno.EINPROGRESS or Errno.EINTR)
        {
            return false;
        }

        throw SocketErrors.CreateException(errno, "connect", endPoint);
    }

    // Null only if the address has no EndPoint form (a family other than IPv4, IPv6 and Unix).
    public static EndPoint? GetLocalEndPoint(int fd)
    {
        byte* sockaddr = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.MaxLength;
        if (SocketInterop.GetSockName(fd, sockaddr, &length) != 0)
        {
            throw SocketErrors.LastError("getsockname");
        }

        return SocketAddressMarshal.TryRead(new ReadOnlySpan<byte>(sockaddr, SocketAddressMarshal.MaxLength), length, out EndPoint? endPoint)
            ? endPoint
            : null;
    }

    // Throws SocketError.NotConnected for a socket without a peer.
    public static EndPoint? GetRemoteEndPoint(int fd)
    {
        byte* sockaddr = stackalloc byte[SocketAddressMarshal.MaxLength];
        int length = SocketAddressMarshal.MaxLength;
        if (SocketInterop.GetPeerName(fd, sockaddr, &length) != 0)
        {
            throw SocketErrors.LastError("getpeername");
        }

        return SocketAddressMarshal.TryRead(new ReadOnlySpan<byte>(sockaddr, SocketAddressMarshal.MaxLength), length, out EndPoint? endPoint)
            ? endPoint
            : null;
    }

    public static void Shutdown(int fd, SocketShutdown how)
    {
        int native = how switch
        {
            SocketShutdown.Receive => SocketInterop.SHUT_RD,
            SocketShutdown.Send => SocketInterop.SHUT_WR,
            SocketShutdown.Both => SocketInterop.SHUT_RDWR,
            _ => throw new ArgumentOutOfRangeException(nameof(how), how, null),
        };

        if (SocketInterop.Shutdown(fd, native) != 0)
        {
            throw SocketErrors.LastError($"shutdown({how})");
        }
    }

    /// <summary>
    /// shutdown(2) that reports failure instead of throwing: on a connection the peer already reset
    /// there is nothing left to shut down (ENOTCONN), which is not an error for the caller.
    /// </summary>
    public static bool TryShutdown(int fd, SocketShutdown how)
        => SocketInterop.Shutdown(fd, how switch
        {
            SocketShutdown.Receive => SocketInterop.SHUT_RD,
            SocketShutdown.Send => SocketInterop.SHUT_WR,
            _ => SocketInterop.SHUT_RDWR,
        }) == 0;

    public static void Close(int fd)
    {
        if (SocketInterop.Close(fd) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();

            // On Linux the descriptor is released even when close is interrupted; retrying could close
            // a descriptor another thread has just been given.
            if (errno != Errno.EINTR)
            {
                throw SocketErrors.CreateException(errno, "close");
            }
        }
    }

    // Returns bytes received (0 at end of stream) or -1 when nothing is available yet.
    public static int Receive(int fd, Span<byte> buffer)
    {
        fixed (byte* data = buffer)
        {
            while (true)
            {
                nint received = SocketInterop.Recv(fd, data, (nuint)buffer.Length, 0);
                if (received >= 0)
                {
                    return (int)received;
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.EINTR)
                {
                    continue;
                }

                if (errno == Errno.EAGAIN)
                {
                    return -1;
                }

                throw SocketErrors.CreateException(errno, "recv");
            }
        }
    }

    // Returns bytes sent or -1 when the send buffer is full.
    public static int Send(int fd, ReadOnlySpan<byte> buffer)
    {
        fixed (byte* data = buffer)
        {
            while (true)
            {
                nint sent = SocketInterop.Send(fd, data, (nuint)buffer.Length, SocketInterop.MSG_NOSIGNAL);
                if (sent >= 0)
                {
                    return (int)sent;
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.EINTR)
                {
                    continue;
                }

                if (errno == Errno.EAGAIN)
                {
                    return -1;
                }

                throw SocketErrors.CreateException(errno, "send");
            }
        }
    }

    public static void SetReuseAddress(int fd, bool enabled) =>
        SetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_REUSEADDR, enabled ? 1 : 0);

    public static void SetReusePort(int fd, bool enabled) =>
        SetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_REUSEPORT, enabled ? 1 : 0);

    public static void SetNoDelay(int fd, bool enabled) =>
        SetIntOption(fd, SocketInterop.IPPROTO_TCP, SocketInterop.TCP_NODELAY, enabled ? 1 : 0);

    public static void SetKeepAlive(int fd, bool enabled) =>
        SetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_KEEPALIVE, enabled ? 1 : 0);

    // Only meaningful on an AF_INET6 socket before bind. Set explicitly rather than relying on the
    // net.ipv6.bindv6only sysctl, which a host may have flipped.
    public static void SetDualMode(int fd, bool dualMode) =>
        SetIntOption(fd, SocketInterop.IPPROTO_IPV6, SocketInterop.IPV6_V6ONLY, dualMode ? 0 : 1);

    // Linger on with a zero timeout makes close() discard unsent data and send RST instead of FIN:
    // the abortive close Kestrel uses for ConnectionContext.Abort.
    public static void SetLingerZero(int fd)
    {
        var linger = new Linger { OnOff = 1, Seconds = 0 };
        if (SocketInterop.SetSockOpt(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_LINGER, &linger, sizeof(Linger)) != 0)
        {
            throw SocketErrors.LastError("setsockopt(SO_LINGER)");
        }
    }

    /// <summary>
    /// <see cref="SetLingerZero"/> that reports failure instead of throwing: on a connection the
    /// peer already reset there is nothing left to reset, which is not an error for the caller.
    /// </summary>
    public static bool TrySetLingerZero(int fd)
    {
        var linger = new Linger { OnOff = 1, Seconds = 0 };
        return SocketInterop.SetSockOpt(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_LINGER, &linger, sizeof(Linger)) == 0;
    }

    public static AddressFamily GetAddressFamily(int fd) =>
        GetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_DOMAIN) switch
        {
            SocketInterop.AF_INET => AddressFamily.InterNetwork,
            SocketInterop.AF_INET6 => AddressFamily.InterNetworkV6,
            SocketInterop.AF_UNIX => AddressFamily.Unix,
            _ => AddressFamily.Unknown,
        };

    public static bool IsStream(int fd) =>
        GetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_TYPE) == SocketInterop.SOCK_STREAM;

    public static bool IsListening(int fd) =>
        GetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_ACCEPTCONN) != 0;

    // The CPU whose receive path last handled this connection's packets (-1 before any arrived): lets a
    // transport hand an accepted connection to the ring thread on that CPU.
    public static int GetIncomingCpu(int fd) =>
        GetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_INCOMING_CPU);

    // Reads and clears the pending error: the outcome of a non-blocking connect, or an asynchronous
    // error such as a reset.
    public static SocketError GetSocketError(int fd)
    {
        int errno = GetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_ERROR);
        return errno == 0 ? SocketError.Success : SocketErrors.FromErrno(errno);
    }

    public static void SetIntOption(int fd, int level, int name, int value)
    {
        if (SocketInterop.SetSockOpt(fd, level, name, &value, sizeof(int)) != 0)
        {
            throw SocketErrors.LastError($"setsockopt(level {level}, option {name})");
        }
    }

    public static int GetIntOption(int fd, int level, int name)
    {
        int value = 0;
        int length = sizeof(int);
        if (SocketInterop.GetSockOpt(fd, level, name, &value, &length) != 0)
        {
            throw SocketErrors.LastError($"getsockopt(level {level}, option {name})");
        }

        return value;
    }

    // Attaches a classic BPF program that picks, for each incoming connection, which socket of this
    // socket's SO_REUSEPORT group receives it (the return value is the index in bind order). The
    // program applies to the whole group; the kernel copies it, so the span need not outlive the call.
    public static void AttachReuseportCbpf(int fd, ReadOnlySpan<SockFilter> program)
    {
        if (program.IsEmpty || program.Length > MaxBpfInstructions)
        {
            throw new ArgumentException($"A classic BPF program has 1 to {MaxBpfInstructions} instructions; got {program.Length}.", nameof(program));
        }

        fixed (SockFilter* filter = program)
        {
            var fprog = new SockFprog { Length = (ushort)program.Length, Filter = filter };
            if (SocketInterop.SetSockOpt(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof(SockFprog)) != 0)
            {
                throw SocketErrors.LastError("setsockopt(SO_ATTACH_REUSEPORT_CBPF)");
            }
        }
    }

    // Attaches an eBPF sk_reuseport program, by descriptor, to this socket's SO_REUSEPORT group. The
    // group takes its own reference, so the caller may close its descriptor at any time.
    public static void AttachReuseportEbpf(int fd, int programFd) =>
        SetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_ATTACH_REUSEPORT_EBPF, programFd);

    // Removes the group's program; the kernel reports ENOENT (SocketError.SocketError) if none is attached.
    public static void DetachReuseportBpf(int fd) =>
        SetIntOption(fd, SocketInterop.SOL_SOCKET, SocketInterop.SO_DETACH_REUSEPORT_BPF, 0);

    private static void CloseQuietly(int fd)
    {
        // Best effort on an error path: the original exception is the one worth reporting.
        _ = SocketInterop.Close(fd);
    }
}
