using System.Runtime.InteropServices;

namespace IoUring.Sockets;

// One classic BPF instruction, as the kernel reads it from a sock_fprog (linux/filter.h):
//   struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; };   8 bytes, 4-byte aligned
//   offset 0 code, 2 jt, 3 jf, 4 k, all native-endian.
// Used for SO_ATTACH_REUSEPORT_CBPF, where the program's return value is the index of the socket in
// the reuseport group (in the order the sockets were bound) that receives the new connection, and
// for io_uring's opcode filters (IORING_REGISTER_BPF_FILTER, Ring/OpcodeAllowlist.cs), where it
// allows (non-zero) or denies (0) one SQE.
[StructLayout(LayoutKind.Sequential)]
internal readonly struct SockFilter
{
    // Opcode pieces from linux/bpf_common.h and linux/filter.h.
    private const ushort BpfLd = 0x00;
    private const ushort BpfW = 0x00;
    private const ushort BpfAbs = 0x20;
    private const ushort BpfRet = 0x06;
    private const ushort BpfK = 0x00;
    private const ushort BpfA = 0x10;
    private const ushort BpfAlu = 0x04;
    private const ushort BpfMod = 0x90;
    private const ushort BpfAnd = 0x50;
    private const ushort BpfJmp = 0x05;
    private const ushort BpfJeq = 0x10;

    /// <summary>BPF_MAXINSNS (linux/bpf_common.h): the longest classic program the kernel accepts.</summary>
    public const int MaxInstructions = 4096;

    // Loads from these negative offsets read ancillary data instead of packet bytes (SKF_AD_OFF is
    // -0x1000, SKF_AD_CPU is 36): the CPU that is processing the incoming SYN.
    private const uint SkfAdOff = unchecked((uint)-0x1000);
    private const uint SkfAdCpu = 36;

    public readonly ushort Code;
    public readonly byte JumpTrue;
    public readonly byte JumpFalse;
    public readonly uint K;

    public SockFilter(ushort code, byte jumpTrue, byte jumpFalse, uint k)
    {
        Code = code;
        JumpTrue = jumpTrue;
        JumpFalse = jumpFalse;
        K = k;
    }

    // "ret #k": with reuseport, always pick socket k of the group.
    public static SockFilter ReturnConstant(uint k) => new((ushort)(BpfRet | BpfK), 0, 0, k);

    // "ret a": return the accumulator.
    public static SockFilter ReturnAccumulator() => new((ushort)(BpfRet | BpfA), 0, 0, 0);

    // "mod #k": accumulator %= k (k must not be 0; the kernel's checker refuses it).
    public static SockFilter ModuloConstant(uint k) => new((ushort)(BpfAlu | BpfMod | BpfK), 0, 0, k);

    // "and #k": accumulator &= k.
    public static SockFilter AndConstant(uint k) => new((ushort)(BpfAlu | BpfAnd | BpfK), 0, 0, k);

    // "jeq #k, jt, jf": skip jt instructions when accumulator == k, else jf.
    public static SockFilter JumpIfEqual(uint k, byte jumpTrue, byte jumpFalse) => new((ushort)(BpfJmp | BpfJeq | BpfK), jumpTrue, jumpFalse, k);

    // "ld #cpu": accumulator = CPU handling the packet. Followed by ReturnAccumulator this steers each
    // connection to the listener whose index equals that CPU, which is the usual way to keep a
    // connection on the ring thread pinned to the CPU that took its interrupt (the group then needs
    // one listener per CPU; an index past the group size makes the kernel fall back to its hash).
    /// <summary>A = the 32-bit word at <paramref name="offset"/> of the packet or, for seccomp, of struct seccomp_data or struct io_uring_bpf_ctx.</summary>
    public static SockFilter LoadWord(uint offset) => new((ushort)(BpfLd | BpfW | BpfAbs), 0, 0, offset);

    public static SockFilter LoadCpu() => new((ushort)(BpfLd | BpfW | BpfAbs), 0, 0, SkfAdOff + SkfAdCpu);
}
