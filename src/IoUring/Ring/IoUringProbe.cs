namespace IoUring;

/// <summary>The opcodes a kernel supports (IORING_REGISTER_PROBE) and the features it reported at setup.</summary>
internal sealed class IoUringProbe
{
    private readonly bool[] _supported;

    public IoUringProbe(byte lastOp, bool[] supported, uint features)
    {
        LastOp = lastOp;
        _supported = supported;
        Features = features;
    }

    /// <summary>The highest opcode the kernel knows.</summary>
    public byte LastOp { get; }

    /// <summary>IORING_FEAT_* bits from io_uring_params.features.</summary>
    public uint Features { get; }

    public bool IsSupported(byte opcode) => opcode < _supported.Length && _supported[opcode];

    public bool HasFeature(uint feature) => (Features & feature) == feature;
}
