using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace IoUring.Bpf;

/// <summary>
/// The kernel's BTF (/sys/kernel/btf/vmlinux) indexed by type id, for a loader that must name
/// kernel types to the kernel: the id of a struct or function, a struct's size and its members'
/// offsets. Format: Documentation/bpf/btf.rst. Type ids count the records from 1 (0 is void) in
/// the order they appear; the string table is searched by name only on demand.
/// </summary>
internal sealed class BtfIndex
{
    private readonly byte[] _btf;
    private readonly int _typesStart;
    private readonly int _stringsStart;
    private readonly int _stringsLength;
    private readonly List<int> _offsets = [0]; // _offsets[id]: where record id starts in _btf; [0] is void's placeholder

    public BtfIndex(byte[] btf)
    {
        if (btf.Length < 24 || BinaryPrimitives.ReadUInt16LittleEndian(btf) != 0xEB9F)
        {
            throw new FormatException("Not little-endian BTF.");
        }

        int headerLength = (int)U32(btf, 4);
        _typesStart = headerLength + (int)U32(btf, 8);
        int typesLength = (int)U32(btf, 12);
        _stringsStart = headerLength + (int)U32(btf, 16);
        _stringsLength = (int)U32(btf, 20);
        if (_typesStart < 0 || typesLength < 0 || _typesStart > btf.Length - typesLength || _stringsStart < 0 || _stringsLength < 0 || _stringsStart > btf.Length - _stringsLength)
        {
            throw new FormatException("The BTF header points past the data.");
        }

        _btf = btf;
        int at = _typesStart;
        int end = _typesStart + typesLength;
        while (at + 12 <= end)
        {
            _offsets.Add(at);
            uint info = U32(btf, at + 4);
            at += 12 + BtfTypes.TrailingBytes(Kind(info), (int)(info & 0xFFFF));
        }
    }

    /// <summary>The kernel's BTF, or null when it exposes none (no CONFIG_DEBUG_INFO_BTF).</summary>
    public static BtfIndex? Load(string path = BtfTypes.VmlinuxPath)
    {
        try
        {
            return new BtfIndex(File.ReadAllBytes(path));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The id of the first type of <paramref name="kind"/> named <paramref name="name"/>; -1 when there is none.</summary>
    public int Find(int kind, string name)
    {
        byte[] wanted = Encoding.ASCII.GetBytes(name);
        for (int id = 1; id < _offsets.Count; id++)
        {
            int at = _offsets[id];
            if (Kind(U32(_btf, at + 4)) == kind && NameBytes(U32(_btf, at)).SequenceEqual(wanted))
            {
                return id;
            }
        }

        return -1;
    }

    /// <summary>A struct's or union's size in bytes (the record's size field).</summary>
    public uint SizeOf(int id) => U32(_btf, Record(id) + 8);

    /// <summary>The members of struct <paramref name="id"/>, in order (the order is the member index struct_ops uses).</summary>
    public IReadOnlyList<BtfMember> Members(int id)
    {
        int at = Record(id);
        uint info = U32(_btf, at + 4);
        if (Kind(info) is not (BtfTypes.KindStruct or 5))
        {
            throw new FormatException($"BTF type {id} is not a struct or union.");
        }

        bool bitfields = (info & 0x8000_0000) != 0; // kind_flag: offsets carry a bitfield size in the top 8 bits
        var members = new List<BtfMember>();
        for (int i = 0; i < (int)(info & 0xFFFF); i++)
        {
            int member = at + 12 + (i * 12);
            uint offset = U32(_btf, member + 8);
            members.Add(new BtfMember(Name(U32(_btf, member)), (int)U32(_btf, member + 4), bitfields ? offset & 0xFFFFFF : offset));
        }

        return members;
    }

    /// <summary>Whether type <paramref name="id"/> is a pointer to a function prototype (through typedefs and qualifiers), as a struct_ops member must be to take a program.</summary>
    public bool IsFunctionPointer(int id)
    {
        id = SkipModifiers(id);
        if (id <= 0 || Kind(U32(_btf, Record(id) + 4)) != BtfTypes.KindPointer)
        {
            return false;
        }

        id = SkipModifiers((int)U32(_btf, Record(id) + 8));
        return id > 0 && Kind(U32(_btf, Record(id) + 4)) == BtfTypes.KindFuncProto;
    }

    private int SkipModifiers(int id)
    {
        for (int depth = 0; id > 0 && depth < 32; depth++)
        {
            int kind = Kind(U32(_btf, Record(id) + 4));
            if (kind is not (BtfTypes.KindTypedef or BtfTypes.KindVolatile or BtfTypes.KindConst or 11 or 18)) // 11 RESTRICT, 18 TYPE_TAG
            {
                return id;
            }

            id = (int)U32(_btf, Record(id) + 8);
        }

        return id;
    }

    private int Record(int id) => id > 0 && id < _offsets.Count ? _offsets[id] : throw new FormatException($"BTF type id {id} is out of range.");

    private ReadOnlySpan<byte> NameBytes(uint offset)
    {
        if (offset == 0 || offset >= _stringsLength)
        {
            return [];
        }

        ReadOnlySpan<byte> rest = _btf.AsSpan(_stringsStart + (int)offset, _stringsLength - (int)offset);
        int end = rest.IndexOf((byte)0);
        return end < 0 ? rest : rest[..end];
    }

    private string Name(uint offset) => Encoding.ASCII.GetString(NameBytes(offset));

    private static int Kind(uint info) => (int)((info >> 24) & 0x1F);

    private static uint U32(byte[] data, int offset) => BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(offset));
}

/// <summary>A struct member as BTF records it: name, type id and offset in bits.</summary>
internal readonly record struct BtfMember(string Name, int TypeId, uint BitOffset)
{
    public int ByteOffset => (int)(BitOffset / 8);
}
