using System;
using System.Runtime.InteropServices;

namespace IoUring.Interop;

// The kernel ABI structs, laid out exactly as include/uapi/linux/io_uring.h declares them.
// Sizes are asserted by the tests (IoUringAbiTests) so a typo here cannot go unnoticed.

/// <summary>struct io_sqring_offsets (40 bytes): where each SQ ring field sits in the mmap'd region.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SqRingOffsets
{
    public uint Head;
    public uint Tail;
    public uint RingMask;
    public uint RingEntries;
    public uint Flags;
    public uint Dropped;
    public uint Array;
    public uint Resv1;
    public ulong UserAddr;
}

/// <summary>struct io_cqring_offsets (40 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CqRingOffsets
{
    public uint Head;
    public uint Tail;
    public uint RingMask;
    public uint RingEntries;
    public uint Overflow;
    public uint Cqes;
    public uint Flags;
    public uint Resv1;
    public ulong UserAddr;
}

/// <summary>struct io_uring_params (120 bytes): in for the flags, out for sizes, features and offsets.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoUringParams
{
    public uint SqEntries;
    public uint CqEntries;
    public uint Flags;
    public uint SqThreadCpu;
    public uint SqThreadIdle;
    public uint Features;
    public uint WqFd;
    public fixed uint Resv[3];
    public SqRingOffsets SqOff;
    public CqRingOffsets CqOff;
}

/// <summary>
/// struct io_uring_region_desc (64 bytes), read by IORING_REGISTER_MEM_REGION (io_uring/memmap.c,
/// io_create_region): user_addr and size page-aligned with IORING_MEM_REGION_TYPE_USER; id,
/// mmap_offset and the reserved words must be 0 (the kernel writes mmap_offset back for a region
/// it allocates itself, which this binding does not ask for).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct RegionDesc
{
    public ulong UserAddr;
    public ulong Size;
    public uint Flags;
    public uint Id;
    public ulong MmapOffset;
    public fixed ulong Resv[4];
}

/// <summary>
/// struct io_uring_mem_region_reg (32 bytes), the argument of IORING_REGISTER_MEM_REGION
/// (io_uring/register.c, io_register_mem_region): the address of a <see cref="RegionDesc"/>;
/// flags 0 (IORING_MEM_REGION_REG_WAIT_ARG would make it the wait-argument region, allowed only on
/// a disabled ring); reserved words 0.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MemRegionReg
{
    public ulong RegionUptr;
    public ulong Flags;
    public fixed ulong Resv[2];
}

/// <summary>
/// struct io_uring_bpf with its struct io_uring_bpf_filter inlined (72 bytes), the argument of
/// IORING_REGISTER_BPF_FILTER (include/uapi/linux/io_uring/bpf_filter.h, Linux 7.0; read by
/// io_bpf_filter_import in io_uring/bpf_filter.c). Written by the application; the kernel reads
/// it and writes back only <see cref="PduSize"/> (the size of the opcode's extra context it fills,
/// e.g. socket()'s or openat()'s arguments). cmd_flags and every reserved field must be 0
/// (-EINVAL otherwise); filter_len from 1 to BPF_MAXINSNS.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct BpfFilterReg
{
    public ushort CmdType;     // IO_URING_BPF_CMD_FILTER
    public ushort CmdFlags;
    public uint Resv;
    public uint Opcode;        // the IORING_OP_* the program is attached to (below IORING_OP_LAST)
    public uint Flags;         // IO_URING_BPF_FILTER_DENY_REST, IO_URING_BPF_FILTER_SZ_STRICT
    public uint FilterLength;  // instructions at FilterPtr
    public byte PduSize;       // 0 asks for no extra context (accepted unless SZ_STRICT); kernel writes its size back
    public fixed byte Resv1[3];
    public ulong FilterPtr;    // struct sock_filter[FilterLength]
    public fixed ulong Resv2[5];
}

/// <summary>struct io_uring_cqe (16 bytes; CQE32 is not used). Written by the kernel only.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Cqe
{
    public ulong UserData;
    public int Res;
    public uint Flags;

    /// <summary>The provided buffer id, valid when <see cref="IoUringConstants.CqeFlags.Buffer"/> is set.</summary>
    public readonly ushort BufferId => (ushort)(Flags >> IoUringConstants.CqeFlags.BufferShift);

    public readonly bool HasBuffer => (Flags & IoUringConstants.CqeFlags.Buffer) != 0;

    /// <summary>The request stays armed (multishot) and will post more CQEs.</summary>
    public readonly bool HasMore => (Flags & IoUringConstants.CqeFlags.More) != 0;

    public readonly bool IsNotification => (Flags & IoUringConstants.CqeFlags.Notif) != 0;
}

/// <summary>struct io_uring_buf (16 bytes): one provided buffer ring entry, written by the application.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct IoUringBuf
{
    public ulong Addr;
    public uint Len;
    public ushort Bid;
    // In entry 0 this field is the ring's tail (struct io_uring_buf_ring overlays it).
    public ushort Resv;
}

/// <summary>struct io_uring_buf_reg (40 bytes): the argument of IORING_(UN)REGISTER_PBUF_RING.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoUringBufReg
{
    public ulong RingAddr;
    public uint RingEntries;
    public ushort Bgid;
    public ushort Flags;
    public fixed ulong Resv[3];
}

/// <summary>struct io_uring_getevents_arg (24 bytes): the IORING_ENTER_EXT_ARG argument.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GetEventsArg
{
    public ulong Sigmask;
    public uint SigmaskSize;
    // "pad" before 6.12; min_wait_usec since (used only with IORING_FEAT_MIN_TIMEOUT).
    public uint MinWaitUsec;
    public ulong Ts;
}

/// <summary>struct __kernel_timespec (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct KernelTimespec
{
    public long TvSec;
    public long TvNsec;

    public static KernelTimespec FromTimeSpan(TimeSpan value)
    {
        long ticks = Math.Max(0, value.Ticks);
        return new KernelTimespec
        {
            TvSec = ticks / TimeSpan.TicksPerSecond,
            TvNsec = ticks % TimeSpan.TicksPerSecond * 100,
        };
    }
}

/// <summary>struct io_uring_rsrc_update (16 bytes): used to register the ring fd.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RsrcUpdate
{
    public uint Offset;
    public uint Resv;
    public ulong Data;
}

/// <summary>struct io_uring_probe_op (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ProbeOp
{
    public byte Op;
    public byte Resv;
    public ushort Flags;
    public uint Resv2;
}

/// <summary>struct io_uring_probe header (16 bytes), followed by <c>ops_len</c> <see cref="ProbeOp"/>s.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct ProbeHeader
{
    public byte LastOp;
    public byte OpsLen;
    public ushort Resv;
    public fixed uint Resv2[3];
}

/// <summary>struct iovec (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoVec
{
    public void* Base;
    public nuint Length;
}

/// <summary>struct msghdr (56 bytes on 64-bit Linux).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MsgHdr
{
    public void* Name;
    public uint NameLen;
    public IoVec* Iov;
    public nuint IovLen;
    public void* Control;
    public nuint ControlLen;
    public int Flags;
}
