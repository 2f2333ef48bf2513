using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace IoUring.Bpf;

/// <summary>
/// Looks up type names in the kernel's own BTF (/sys/kernel/btf/vmlinux), the way to ask a running
/// kernel which structs and functions it was built with. Format: Documentation/bpf/btf.rst — a
/// header, then a run of type records (12 bytes each, followed by data whose size depends on the
/// kind), then a string table the records name by offset.
/// </summary>
internal static class BtfTypes
{
    public const string VmlinuxPath = "/sys/kernel/btf/vmlinux";

    public const int KindStruct = 4;
    public const int KindPointer = 2;
    public const int KindTypedef = 8;
    public const int KindVolatile = 9;
    public const int KindConst = 10;
    public const int KindFunc = 12;
    public const int KindFuncProto = 13;

    private const ushort Magic = 0xEB9F;

    /// <summary>Which of <paramref name="wanted"/> (kind, name) exist in <paramref name="path"/>; null when the kernel exposes no BTF.</summary>
    public static HashSet<(int Kind, string Name)>? Find(IEnumerable<(int Kind, string Name)> wanted, string path = VmlinuxPath)
    {
        byte[] btf;
        try
        {
            btf = File.ReadAllBytes(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        return Find(btf, wanted);
    }

    public static HashSet<(int Kind, string Name)> Find(ReadOnlySpan<byte> btf, IEnumerable<(int Kind, string Name)> wanted)
    {
        if (btf.Length < 24 || BinaryPrimitives.ReadUInt16LittleEndian(btf) != Magic)
        {
            throw new FormatException("Not little-endian BTF.");
        }

        int headerLength = (int)U32(btf, 4);
        int typeOffset = headerLength + (int)U32(btf, 8);
        int typeLength = (int)U32(btf, 12);
        int stringOffset = headerLength + (int)U32(btf, 16);
        int stringLength = (int)U32(btf, 20);
        ReadOnlySpan<byte> types = btf.Slice(typeOffset, typeLength);
        ReadOnlySpan<byte> strings = btf.Slice(stringOffset, stringLength);

        var byName = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        foreach ((int kind, string name) in wanted)
        {
            if (!byName.TryGetValue(name, out List<int>? kinds))
            {
                byName[name] = kinds = [];
            }

            kinds.Add(kind);
        }

        var found = new HashSet<(int, string)>();
        int at = 0;
        while (at + 12 <= types.Length)
        {
            uint nameOffset = U32(types, at);
            uint info = U32(types, at + 4);
            int kind = (int)((info >> 24) & 0x1F);
            int vlen = (int)(info & 0xFFFF);
            if (nameOffset != 0 && nameOffset < strings.Length)
            {
                ReadOnlySpan<byte> rest = strings[(int)nameOffset..];
                int end = rest.IndexOf((byte)0);
                string name = Encoding.ASCII.GetString(end < 0 ? rest : rest[..end]);
                if (byName.TryGetValue(name, out List<int>? kinds) && kinds.Contains(kind))
                {
                    found.Add((kind, name));
                }
            }

            at += 12 + TrailingBytes(kind, vlen);
        }

        return found;
    }

    // The data after each 12-byte record, per BTF_KIND_* (linux/btf.h).
    internal static int TrailingBytes(int kind, int vlen) => kind switch
    {
        1 => 4,                 // INT: encoding
        3 => 12,                // ARRAY: struct btf_array
        4 or 5 => vlen * 12,    // STRUCT, UNION: members
        6 => vlen * 8,          // ENUM: values
        13 => vlen * 8,         // FUNC_PROTO: parameters
        14 => 4,                // VAR: linkage
        15 => vlen * 12,        // DATASEC: variables
        17 => 4,                // DECL_TAG: component index
        19 => vlen * 12,        // ENUM64: values
        2 or 7 or 8 or 9 or 10 or 11 or 12 or 16 or 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        _ => throw new FormatException($"Unknown BTF kind {kind}: this reader is older than the kernel's BTF."),
    };

    private static uint U32(ReadOnlySpan<byte> data, int offset) => BinaryPrimitives.ReadUInt32LittleEndian(data[offset..]);
}
