namespace IoUring.Interop;

/// <summary>
/// Constants from include/uapi/linux/io_uring.h, grouped by the field they go in. Values are ABI:
/// they never change once released, so a kernel that lacks one rejects it (EINVAL) rather than
/// misreading it.
/// </summary>
internal static class IoUringConstants
{
    /// <summary>enum io_uring_op: <c>sqe->opcode</c>.</summary>
    public static class Op
    {
        public const byte Nop = 0;
        public const byte Readv = 1;
        public const byte Writev = 2;
        public const byte PollAdd = 6;
        public const byte PollRemove = 7;
        public const byte SendMsg = 9;
        public const byte RecvMsg = 10;
        public const byte Timeout = 11;
        public const byte TimeoutRemove = 12;
        public const byte Accept = 13;
        public const byte AsyncCancel = 14;
        public const byte LinkTimeout = 15;
        public const byte Connect = 16;
        public const byte OpenAt = 18;
        public const byte Close = 19;
        public const byte Read = 22;
        public const byte Write = 23;
        public const byte Send = 26;
        public const byte Recv = 27;
        public const byte Shutdown = 34;
        public const byte MsgRing = 40;
        public const byte Socket = 45;
        public const byte SendZc = 47;
        public const byte SendMsgZc = 48;
        public const byte ReadMultishot = 49;
        public const byte Bind = 56;
        public const byte Listen = 57;
    }

    /// <summary><c>sqe->flags</c> (IOSQE_*).</summary>
    public static class SqeFlags
    {
        public const byte FixedFile = 1 << 0;
        public const byte IoDrain = 1 << 1;
        public const byte IoLink = 1 << 2;
        public const byte IoHardLink = 1 << 3;
        public const byte Async = 1 << 4;
        public const byte BufferSelect = 1 << 5;
        public const byte CqeSkipSuccess = 1 << 6;
    }

    /// <summary><c>io_uring_params.flags</c> (IORING_SETUP_*).</summary>
    public static class Setup
    {
        public const uint IoPoll = 1u << 0;
        public const uint SqPoll = 1u << 1;
        public const uint SqAff = 1u << 2;
        public const uint CqSize = 1u << 3;
        public const uint Clamp = 1u << 4;
        public const uint AttachWq = 1u << 5;
        public const uint RDisabled = 1u << 6;
        public const uint SubmitAll = 1u << 7;
        public const uint CoopTaskRun = 1u << 8;
        public const uint TaskRunFlag = 1u << 9;
        public const uint Sqe128 = 1u << 10;
        public const uint Cqe32 = 1u << 11;
        public const uint SingleIssuer = 1u << 12;
        public const uint DeferTaskRun = 1u << 13;
        public const uint NoMmap = 1u << 14;
        public const uint RegisteredFdOnly = 1u << 15;
        public const uint NoSqArray = 1u << 16;
    }

    /// <summary><c>io_uring_params.features</c> (IORING_FEAT_*), written by the kernel at setup.</summary>
    public static class Features
    {
        public const uint SingleMmap = 1u << 0;
        public const uint NoDrop = 1u << 1;
        public const uint SubmitStable = 1u << 2;
        public const uint FastPoll = 1u << 5;
        public const uint ExtArg = 1u << 8;
        public const uint NativeWorkers = 1u << 9;
        public const uint CqeSkip = 1u << 11;
        public const uint RegRegRing = 1u << 13;
        public const uint RecvSendBundle = 1u << 14;
        public const uint MinTimeout = 1u << 15;
    }

    /// <summary>io_uring_enter(2) flags (IORING_ENTER_*).</summary>
    public static class Enter
    {
        public const uint GetEvents = 1u << 0;
        public const uint SqWakeup = 1u << 1;
        public const uint SqWait = 1u << 2;
        public const uint ExtArg = 1u << 3;
        public const uint RegisteredRing = 1u << 4;
    }

    /// <summary>The SQ ring's <c>flags</c> word (IORING_SQ_*), written by the kernel.</summary>
    public static class SqRingFlags
    {
        public const uint NeedWakeup = 1u << 0;
        public const uint CqOverflow = 1u << 1;
        public const uint TaskRun = 1u << 2;
    }

    /// <summary><c>cqe->flags</c> (IORING_CQE_F_*).</summary>
    public static class CqeFlags
    {
        public const uint Buffer = 1u << 0;
        public const uint More = 1u << 1;
        public const uint SockNonEmpty = 1u << 2;
        public const uint Notif = 1u << 3;
        public const uint BufMore = 1u << 4;
        public const int BufferShift = 16;
    }

    /// <summary>Send and receive flags in <c>sqe->ioprio</c> (IORING_RECVSEND_*, IORING_RECV_*).</summary>
    public static class RecvSend
    {
        public const ushort PollFirst = 1 << 0;
        public const ushort RecvMultishot = 1 << 1;
        public const ushort FixedBuf = 1 << 2;
        public const ushort SendZcReportUsage = 1 << 3;
        public const ushort Bundle = 1 << 4;
    }

    /// <summary>Accept flags in <c>sqe->ioprio</c> (IORING_ACCEPT_*).</summary>
    public static class AcceptFlags
    {
        public const ushort Multishot = 1 << 0;
    }

    /// <summary><c>sqe->cancel_flags</c> (IORING_ASYNC_CANCEL_*).</summary>
    public static class Cancel
    {
        public const uint All = 1u << 0;
        public const uint Fd = 1u << 1;
        public const uint Any = 1u << 2;
        public const uint FdFixed = 1u << 3;
        public const uint UserData = 1u << 4;
    }

    /// <summary><c>sqe->timeout_flags</c> (IORING_TIMEOUT_*).</summary>
    public static class TimeoutFlags
    {
        public const uint Abs = 1u << 0;
        public const uint BootTime = 1u << 2;
        public const uint EtimeSuccess = 1u << 5;
        public const uint Multishot = 1u << 6;
    }

    /// <summary>IORING_OP_MSG_RING command (in <c>sqe->addr</c>) and flags.</summary>
    public static class MsgRing
    {
        public const ulong Data = 0;
        public const ulong SendFd = 1;
        public const uint CqeSkip = 1u << 0;
        public const uint FlagsPass = 1u << 1;
    }

    /// <summary>Magic <c>mmap</c> offsets (IORING_OFF_*).</summary>
    public static class MmapOffsets
    {
        public const long SqRing = 0;
        public const long CqRing = 0x8000000;
        public const long Sqes = 0x10000000;
    }

    /// <summary>io_uring_register(2) opcodes.</summary>
    public static class Register
    {
        public const uint RegisterBuffers = 0;
        public const uint RegisterFiles = 2;
        public const uint RegisterEventFd = 4;
        public const uint RegisterProbe = 8;
        public const uint EnableRings = 12;
        public const uint RegisterRingFds = 20;
        public const uint UnregisterRingFds = 21;
        public const uint RegisterPbufRing = 22;
        public const uint UnregisterPbufRing = 23;
        public const uint RegisterPbufStatus = 26;
        public const uint RegisterNapi = 27;
        public const uint RegisterMemRegion = 34; // IORING_REGISTER_MEM_REGION (6.13)
        public const uint RegisterBpfFilter = 37; // IORING_REGISTER_BPF_FILTER (7.0; io_uring/bpf_filter.c)
        public const uint UseRegisteredRing = 1u << 31;
    }

    /// <summary>Values of <c>struct io_uring_bpf</c> (include/uapi/linux/io_uring/bpf_filter.h, Linux 7.0).</summary>
    public static class BpfFilter
    {
        /// <summary>IO_URING_BPF_CMD_FILTER, <c>io_uring_bpf.cmd_type</c>: attach a classic BPF filter to one opcode.</summary>
        public const ushort CmdFilter = 1;

        /// <summary>
        /// IO_URING_BPF_FILTER_DENY_REST, <c>io_uring_bpf_filter.flags</c>: every opcode that has no
        /// filter yet gets the kernel's deny-all filter, so it completes with -EACCES from then on.
        /// </summary>
        public const uint DenyRest = 1;

        /// <summary>sizeof(struct io_uring_bpf_ctx) in 7.0 to 7.2: what a filter may load from (offsets below it, 4-aligned).</summary>
        public const uint ContextSize = 40;

        /// <summary>offsetof(struct io_uring_bpf_ctx, opcode): the byte after the 8-byte user_data.</summary>
        public const uint OpcodeOffset = 8;
    }

    /// <summary>IOU_PBUF_RING_* flags of <c>io_uring_buf_reg.flags</c>.</summary>
    public static class PbufRing
    {
        public const ushort Mmap = 1;
        public const ushort Incremental = 2;
    }

    /// <summary>IORING_MEM_REGION_TYPE_USER (<c>io_uring_region_desc.flags</c>): the region is the caller's memory at user_addr, pinned by the kernel.</summary>
    public const uint MemRegionTypeUser = 1;

    /// <summary><c>io_uring_probe_op.flags</c>.</summary>
    public const ushort OpSupported = 1;

    /// <summary><c>cqe.res</c> bit of a SEND_ZC notification when REPORT_USAGE was asked and the data was copied.</summary>
    public const uint NotifUsageZcCopied = 1u << 31;
}
