using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static IoUring.Interop.IoUringConstants;

namespace IoUring.Interop;

/// <summary>
/// struct io_uring_sqe (64 bytes). Written by the application between <see cref="Ring.GetSqe"/>
/// and the release store of the SQ tail in <see cref="Ring.Submit"/>; read by the kernel after it.
/// The <c>Prep…</c> methods are named after liburing's <c>io_uring_prep_…</c> helpers so the man
/// page of the same name (e.g. io_uring_prep_recv(3)) documents each one; they all start from
/// <see cref="PrepRw"/>, which clears every field but <see cref="UserData"/> first so no stale
/// value of a union leaks in. As liburing's, the preparers leave <c>user_data</c> alone (it is
/// io_uring_sqe_set_data(3)'s): <see cref="Ring.GetSqe"/> hands out an SQE with it zeroed, and a
/// caller may set it before or after preparing.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal unsafe struct Sqe
{
    [FieldOffset(0)] public byte Opcode;
    [FieldOffset(1)] public byte Flags;
    [FieldOffset(2)] public ushort IoPrio;
    [FieldOffset(4)] public int Fd;
    // union { off; addr2; }
    [FieldOffset(8)] public ulong Off;
    // union { addr; splice_off_in; }
    [FieldOffset(16)] public ulong Addr;
    [FieldOffset(24)] public uint Len;
    // union { rw_flags; msg_flags; timeout_flags; accept_flags; cancel_flags; msg_ring_flags; ... }
    [FieldOffset(28)] public uint OpFlags;
    [FieldOffset(32)] public ulong UserData;
    // union { buf_index; buf_group; }
    [FieldOffset(40)] public ushort BufIndex;
    [FieldOffset(42)] public ushort Personality;
    // union { splice_fd_in; file_index; optlen; addr_len; }
    [FieldOffset(44)] public uint FileIndex;
    // union { addr3; optval; cmd[]; }
    [FieldOffset(48)] public ulong Addr3;
    [FieldOffset(56)] public ulong Pad2;

    /// <summary>The buffer group for IOSQE_BUFFER_SELECT (aliases <see cref="BufIndex"/>).</summary>
    public ushort BufGroup
    {
        readonly get => BufIndex;
        set => BufIndex = value;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PrepRw(byte opcode, int fd, ulong addr, uint len, ulong offset)
    {
        ulong userData = UserData;
        this = default;
        UserData = userData;
        Opcode = opcode;
        Fd = fd;
        Addr = addr;
        Len = len;
        Off = offset;
    }

    public void PrepNop() => PrepRw(Op.Nop, -1, 0, 0, 0);

    /// <summary>io_uring_prep_read(3). With offset -1 a stream (eventfd, pipe, socket) is read at its position.</summary>
    public void PrepRead(int fd, void* buffer, uint length, ulong offset) => PrepRw(Op.Read, fd, (ulong)buffer, length, offset);

    public void PrepWrite(int fd, void* buffer, uint length, ulong offset) => PrepRw(Op.Write, fd, (ulong)buffer, length, offset);

    /// <summary>io_uring_prep_accept(3). <paramref name="addrLen"/> is a pointer to a socklen_t, stored in <c>off</c>.</summary>
    public void PrepAccept(int fd, void* addr, uint* addrLen, int flags)
    {
        PrepRw(Op.Accept, fd, (ulong)addr, 0, (ulong)addrLen);
        OpFlags = (uint)flags;
    }

    /// <summary>
    /// io_uring_prep_multishot_accept(3): one SQE posts a CQE per accepted connection (with
    /// IORING_CQE_F_MORE while it stays armed). No address is captured: every CQE would overwrite
    /// the same buffer, so peers are read with getpeername when needed.
    /// </summary>
    public void PrepMultishotAccept(int fd, int flags)
    {
        PrepAccept(fd, null, null, flags);
        IoPrio |= AcceptFlags.Multishot;
    }

    /// <summary>io_uring_prep_recv(3).</summary>
    public void PrepRecv(int fd, void* buffer, uint length, int flags)
    {
        PrepRw(Op.Recv, fd, (ulong)buffer, length, 0);
        OpFlags = (uint)flags;
    }

    /// <summary>
    /// io_uring_prep_recv_multishot(3) with buffer selection from provided buffer group
    /// <paramref name="bufferGroup"/>: each CQE carries the buffer id in its upper 16 flag bits.
    /// With <paramref name="bundle"/> (IORING_RECVSEND_BUNDLE, Linux 6.10) one CQE may cover several
    /// consecutive entries of the buffer ring.
    /// </summary>
    public void PrepRecvMultishotSelect(int fd, ushort bufferGroup, bool bundle, int flags = 0)
    {
        PrepRw(Op.Recv, fd, 0, 0, 0);
        OpFlags = (uint)flags;
        IoPrio = RecvSend.RecvMultishot;
        if (bundle)
        {
            IoPrio |= RecvSend.Bundle;
        }

        Flags = SqeFlags.BufferSelect;
        BufGroup = bufferGroup;
    }

    /// <summary>
    /// A single receive (io_uring_prep_recv(3)) into a buffer the kernel picks from provided buffer
    /// group <paramref name="bufferGroup"/>, as long as that buffer: one CQE, without IORING_CQE_F_MORE.
    /// </summary>
    public void PrepRecvSelect(int fd, ushort bufferGroup, int flags = 0)
    {
        // Length 0 with a buffer ring: the selected buffer's own length (io_ring_buffer_select,
        // io_uring/kbuf.c, since the buffer rings of Linux 5.19).
        PrepRw(Op.Recv, fd, 0, 0, 0);
        OpFlags = (uint)flags;
        Flags = SqeFlags.BufferSelect;
        BufGroup = bufferGroup;
    }

    /// <summary>
    /// IORING_RECVSEND_POLL_FIRST on a prepared receive or send: the kernel skips the attempt at
    /// submission and waits for the socket's readiness first (io_uring_prep_recv(3)).
    /// </summary>
    public void SetPollFirst() => IoPrio |= RecvSend.PollFirst;

    /// <summary>io_uring_prep_send(3).</summary>
    public void PrepSend(int fd, void* buffer, uint length, int flags)
    {
        PrepRw(Op.Send, fd, (ulong)buffer, length, 0);
        OpFlags = (uint)flags;
    }

    /// <summary>io_uring_prep_sendmsg(3). The msghdr and its iovecs must stay valid until the CQE.</summary>
    public void PrepSendMsg(int fd, MsgHdr* msg, int flags)
    {
        PrepRw(Op.SendMsg, fd, (ulong)msg, 1, 0);
        OpFlags = (uint)flags;
    }

    /// <summary>
    /// io_uring_prep_send_zc(3): two CQEs, the result (with F_MORE) and later a notification
    /// (F_NOTIF) once the kernel no longer references the memory.
    /// </summary>
    public void PrepSendZc(int fd, void* buffer, uint length, int flags, ushort zcFlags = 0)
    {
        PrepRw(Op.SendZc, fd, (ulong)buffer, length, 0);
        OpFlags = (uint)flags;
        IoPrio = zcFlags;
    }

    /// <summary>io_uring_prep_sendmsg_zc(3).</summary>
    public void PrepSendMsgZc(int fd, MsgHdr* msg, int flags)
    {
        PrepSendMsg(fd, msg, flags);
        Opcode = Op.SendMsgZc;
    }

    /// <summary>io_uring_prep_openat(3): <paramref name="path"/> is a NUL-terminated path, relative to <paramref name="dirFd"/> (AT_FDCWD is -100).</summary>
    public void PrepOpenat(int dirFd, byte* path, int flags, uint mode)
    {
        PrepRw(Op.OpenAt, dirFd, (ulong)path, mode, 0);
        OpFlags = (uint)flags;
    }

    /// <summary>
    /// io_uring_prep_connect(3): connect <paramref name="fd"/> to the sockaddr at <paramref name="addr"/>
    /// (its length goes in <c>off</c>, as liburing puts it). The kernel copies the address when it
    /// prepares the request (io_connect_prep in io_uring/net.c), at submission.
    /// </summary>
    public void PrepConnect(int fd, void* addr, uint addrLen) => PrepRw(Op.Connect, fd, (ulong)addr, 0, addrLen);

    /// <summary>io_uring_prep_close(3).</summary>
    public void PrepClose(int fd) => PrepRw(Op.Close, fd, 0, 0, 0);

    /// <summary>io_uring_prep_shutdown(3); <paramref name="how"/> is SHUT_RD/SHUT_WR/SHUT_RDWR.</summary>
    public void PrepShutdown(int fd, int how) => PrepRw(Op.Shutdown, fd, 0, (uint)how, 0);

    /// <summary>io_uring_prep_cancel64(3): cancel the request(s) submitted with <paramref name="targetUserData"/>.</summary>
    public void PrepCancel64(ulong targetUserData, uint flags = 0)
    {
        PrepRw(Op.AsyncCancel, -1, targetUserData, 0, 0);
        OpFlags = flags;
    }

    /// <summary>io_uring_prep_cancel_fd(3): cancel requests on <paramref name="fd"/> (add Cancel.All for every one).</summary>
    public void PrepCancelFd(int fd, uint flags = 0)
    {
        PrepRw(Op.AsyncCancel, fd, 0, 0, 0);
        OpFlags = flags | Cancel.Fd;
    }

    /// <summary>
    /// io_uring_prep_timeout(3): completes with -ETIME after <paramref name="ts"/>, or with 0 once
    /// <paramref name="count"/> other completions have been posted (0: time only). The kernel copies
    /// the timespec when it consumes the SQE (in io_uring_enter), so it must stay valid until the
    /// next submit, not until the completion.
    /// </summary>
    public void PrepTimeout(KernelTimespec* ts, uint count, uint flags)
    {
        PrepRw(Op.Timeout, -1, (ulong)ts, 1, count);
        OpFlags = flags;
    }

    /// <summary>io_uring_prep_link_timeout(3).</summary>
    public void PrepLinkTimeout(KernelTimespec* ts, uint flags)
    {
        PrepRw(Op.LinkTimeout, -1, (ulong)ts, 1, 0);
        OpFlags = flags;
    }

    /// <summary>
    /// io_uring_prep_msg_ring(3): post a CQE with res <paramref name="res"/> and user_data
    /// <paramref name="data"/> on the ring whose fd is <paramref name="ringFd"/>.
    /// </summary>
    public void PrepMsgRing(int ringFd, uint res, ulong data, uint flags)
    {
        PrepRw(Op.MsgRing, ringFd, MsgRing.Data, res, data);
        OpFlags = flags;
    }

    /// <summary>io_uring_prep_poll_add(3) (one shot; multishot is <c>len = IORING_POLL_ADD_MULTI</c>).</summary>
    public void PrepPollAdd(int fd, uint pollMask)
    {
        PrepRw(Op.PollAdd, fd, 0, 0, 0);
        OpFlags = pollMask;
    }
}
