using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Text;

namespace IoUring.Bpf;

/// <summary>
/// The parts of a clang-built BPF object (ELF64, little-endian, EM_BPF) that a loader needs: each
/// program section's instructions, the map references in them (R_BPF_64_64 relocations against
/// symbols of the "maps" section), its calls of kernel functions (R_BPF_64_32 relocations of a call
/// against an undefined symbol: a kfunc), the map definitions and the licence. Section and symbol
/// layouts are from elf(5); this reads only what bpf/*.bpf.c produce (no BTF, no calls between
/// functions, no global data), and refuses anything else rather than load it wrongly.
/// </summary>
internal sealed class BpfElfObject
{
    private const ushort MachineBpf = 247; // EM_BPF
    private const uint SectionProgbits = 1; // SHT_PROGBITS
    private const uint SectionRel = 9;      // SHT_REL
    private const uint SectionSymtab = 2;   // SHT_SYMTAB
    private const uint RelocationBpf6464 = 1; // R_BPF_64_64: a 64-bit immediate load (ld_imm64) of a symbol's address
    private const uint RelocationBpf6432 = 10; // R_BPF_64_32: a call's 32-bit immediate (llvm's BPF backend, ELFRelocs/BPF.def)
    private const byte OpLoadImm64 = 0x18;  // BPF_LD | BPF_IMM | BPF_DW
    private const byte OpCall = 0x85;       // BPF_JMP | BPF_CALL
    private const byte PseudoMapFd = 1;     // BPF_PSEUDO_MAP_FD: the immediate is a map descriptor
    private const byte PseudoCall = 1;      // BPF_PSEUDO_CALL: what clang emits for a call of a named function (imm -1 until relocated)
    private const byte PseudoKfuncCall = 2; // BPF_PSEUDO_KFUNC_CALL: imm is a kernel function's BTF id, off the BTF's fd_array index (0: vmlinux)
    private const ushort SectionUndefined = 0; // SHN_UNDEF: a symbol defined elsewhere (here: in the kernel)
    private const ulong FlagExecInstr = 0x4; // SHF_EXECINSTR: the section holds instructions
    private const int SectionHeaderSize = 64; // sizeof(Elf64_Shdr)
    private const int SymbolSize = 24;        // sizeof(Elf64_Sym)
    private const int RelocationSize = 16;    // sizeof(Elf64_Rel)

    private readonly Dictionary<string, BpfElfProgram> _programs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, BpfMapDefinition> _maps = new(StringComparer.Ordinal);

    private BpfElfObject(string license) => License = license;

    /// <summary>The program's declared licence (the "license" section); the kernel checks it for GPL-only helpers.</summary>
    public string License { get; }

    public IReadOnlyDictionary<string, BpfElfProgram> Programs => _programs;

    public IReadOnlyDictionary<string, BpfMapDefinition> Maps => _maps;

    public static BpfElfObject Parse(ReadOnlySpan<byte> elf)
    {
        if (elf.Length < 64 || elf[0] != 0x7F || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
        {
            throw new FormatException("Not an ELF file.");
        }

        if (elf[4] != 2 || elf[5] != 1 || U16(elf, 0x12) != MachineBpf)
        {
            throw new FormatException("Not a 64-bit little-endian BPF object.");
        }

        ulong sectionTable = U64(elf, 0x28);   // e_shoff
        int sectionSize = U16(elf, 0x3A);      // e_shentsize
        int sectionCount = U16(elf, 0x3C);     // e_shnum
        int namesIndex = U16(elf, 0x3E);       // e_shstrndx
        if (sectionSize < SectionHeaderSize)
        {
            throw new FormatException($"Section headers of {sectionSize} bytes are shorter than an Elf64_Shdr.");
        }

        if (namesIndex >= sectionCount)
        {
            throw new FormatException($"The section name table index {namesIndex} is past the {sectionCount} sections.");
        }

        var sections = new Section[sectionCount];
        for (int i = 0; i < sectionCount; i++)
        {
            // i * sectionSize fits easily in 64 bits (both are 16-bit); Slice rejects an offset past the end.
            ReadOnlySpan<byte> header = Slice(elf, sectionTable + ((ulong)i * (ulong)sectionSize), SectionHeaderSize);
            sections[i] = new Section(
                NameOffset: U32(header, 0), Type: U32(header, 4), Flags: U64(header, 8), Offset: U64(header, 24), Size: U64(header, 32),
                Link: U32(header, 40), Info: U32(header, 44));
        }

        ReadOnlySpan<byte> sectionNames = Data(elf, sections[namesIndex]);
        string[] names = new string[sectionCount];
        for (int i = 0; i < sectionCount; i++)
        {
            names[i] = CString(sectionNames, sections[i].NameOffset);
        }

        int licenseIndex = Array.IndexOf(names, "license");
        int mapsIndex = Array.IndexOf(names, "maps");
        int symtabIndex = Array.FindIndex(sections, s => s.Type == SectionSymtab);
        if (licenseIndex < 0 || symtabIndex < 0)
        {
            throw new FormatException("The BPF object has no license section or no symbol table.");
        }

        var result = new BpfElfObject(CString(Data(elf, sections[licenseIndex]), 0));
        if (sections[symtabIndex].Link >= sectionCount)
        {
            throw new FormatException($"The symbol table links to section {sections[symtabIndex].Link}, past the {sectionCount} sections.");
        }

        ReadOnlySpan<byte> symbols = Data(elf, sections[symtabIndex]);
        ReadOnlySpan<byte> symbolNames = Data(elf, sections[(int)sections[symtabIndex].Link]);
        int symbolCount = symbols.Length / SymbolSize;

        // Maps: every symbol defined in "maps" is a struct dispatch_map_def (bpf/dispatch.h), five u32.
        for (int s = 0; s < symbolCount && mapsIndex >= 0; s++)
        {
            ReadOnlySpan<byte> symbol = symbols.Slice(s * SymbolSize, SymbolSize);
            if (U16(symbol, 6) == mapsIndex && U64(symbol, 16) == 20)
            {
                ReadOnlySpan<byte> definition = Slice(Data(elf, sections[mapsIndex]), U64(symbol, 8), 20);
                string name = CString(symbolNames, U32(symbol, 0));
                result._maps[name] = new BpfMapDefinition(name, U32(definition, 0), U32(definition, 4), U32(definition, 8), U32(definition, 12), U32(definition, 16));
            }
        }

        // Programs: executable sections other than the empty .text; their relocations name maps.
        for (int i = 0; i < sectionCount; i++)
        {
            if (sections[i].Type != SectionRel || sections[i].Info >= sectionCount)
            {
                continue;
            }

            int target = (int)sections[i].Info;
            if (sections[target].Type != SectionProgbits || (sections[target].Flags & FlagExecInstr) == 0)
            {
                throw new FormatException($"Relocations of {names[target]}, which holds no instructions, are not supported.");
            }

            ReadOnlySpan<byte> relocations = Data(elf, sections[i]);
            var references = new List<BpfMapReference>();
            var kfuncs = new List<BpfKfuncReference>();
            for (int r = 0; r + RelocationSize <= relocations.Length; r += RelocationSize)
            {
                ulong offset = U64(relocations, r);
                ulong info = U64(relocations, r + 8);
                if ((uint)info == RelocationBpf6432)
                {
                    kfuncs.Add(KfuncCall(elf, sections[target], names[target], offset, info >> 32, symbols, symbolNames, symbolCount));
                    continue;
                }

                if ((uint)info != RelocationBpf6464)
                {
                    throw new FormatException($"Relocation type {(uint)info} in {names[target]} is not supported (only map references and kernel function calls).");
                }

                // The relocated instruction is an ld_imm64: two 8-byte slots, both inside the section.
                if (offset % 8 != 0 || offset > sections[target].Size || sections[target].Size - offset < 16)
                {
                    throw new FormatException($"A relocation in {names[target]} at offset {offset} is not a whole 16-byte instruction inside the section.");
                }

                ulong symbolIndex = info >> 32;
                if (symbolIndex >= (ulong)symbolCount)
                {
                    throw new FormatException($"A relocation in {names[target]} names symbol {symbolIndex}, past the {symbolCount} symbols.");
                }

                ReadOnlySpan<byte> symbol = symbols.Slice((int)symbolIndex * SymbolSize, SymbolSize);
                if (U16(symbol, 6) != mapsIndex)
                {
                    throw new FormatException($"{names[target]} references a symbol outside the maps section (global data or calls are not supported).");
                }

                references.Add(new BpfMapReference((int)(offset / 8), CString(symbolNames, U32(symbol, 0))));
            }

            result._programs[names[target]] = new BpfElfProgram(names[target], Data(elf, sections[target]).ToArray(), references, kfuncs);
        }

        for (int i = 0; i < sectionCount; i++)
        {
            // A program without map references has no relocation section.
            if (sections[i].Type == SectionProgbits && (sections[i].Flags & FlagExecInstr) != 0 && sections[i].Size > 0 && !names[i].StartsWith('.') && i != licenseIndex && i != mapsIndex && !result._programs.ContainsKey(names[i]))
            {
                result._programs[names[i]] = new BpfElfProgram(names[i], Data(elf, sections[i]).ToArray(), [], []);
            }
        }

        return result;
    }

    /// <summary>
    /// The program's instructions with each map reference turned into a map-descriptor load
    /// (src_reg = BPF_PSEUDO_MAP_FD, imm = descriptor), the form BPF_PROG_LOAD accepts.
    /// </summary>
    public static byte[] Relocate(BpfElfProgram program, Func<string, int> mapFd) => Relocate(program, mapFd, kfuncBtfId: null);

    /// <summary>
    /// Like <see cref="Relocate(BpfElfProgram, Func{string, int})"/>, and each kernel function call
    /// turned into a kfunc call (src_reg = BPF_PSEUDO_KFUNC_CALL, imm = the function's id in the
    /// kernel's BTF, off = 0 for vmlinux rather than a module's BTF): how the verifier finds the
    /// function (kernel/bpf/verifier.c, add_kfunc_call and fetch_kfunc_meta).
    /// </summary>
    public static byte[] Relocate(BpfElfProgram program, Func<string, int> mapFd, Func<string, int>? kfuncBtfId)
    {
        byte[] instructions = (byte[])program.Instructions.Clone();
        if (program.KfuncReferences.Count > 0 && kfuncBtfId is null)
        {
            throw new FormatException($"{program.Section} calls kernel functions ({program.KfuncReferences[0].Name}), which this loader does not resolve for its program type.");
        }

        foreach (BpfKfuncReference call in program.KfuncReferences)
        {
            int at = call.InstructionIndex * 8;
            instructions[at + 1] = (byte)(PseudoKfuncCall << 4); // dst_reg 0
            BinaryPrimitives.WriteInt16LittleEndian(instructions.AsSpan(at + 2), 0);
            BinaryPrimitives.WriteInt32LittleEndian(instructions.AsSpan(at + 4), kfuncBtfId!(call.Name));
        }

        foreach (BpfMapReference reference in program.MapReferences)
        {
            int at = reference.InstructionIndex * 8;
            if (at < 0 || at > instructions.Length - 16 || instructions[at] != OpLoadImm64)
            {
                throw new FormatException($"The map reference to {reference.MapName} at instruction {reference.InstructionIndex} is not a 64-bit immediate load.");
            }

            // Byte 1 holds dst_reg (low nibble) and src_reg (high nibble).
            instructions[at + 1] = (byte)((instructions[at + 1] & 0x0F) | (PseudoMapFd << 4));
            BinaryPrimitives.WriteInt32LittleEndian(instructions.AsSpan(at + 4), mapFd(reference.MapName));
            BinaryPrimitives.WriteInt32LittleEndian(instructions.AsSpan(at + 12), 0); // upper half of the immediate
        }

        return instructions;
    }

    // A call relocated against an undefined symbol: `extern` function declarations in the source,
    // which a BPF object can only mean as kernel functions (libbpf marks them __ksym; without BTF
    // the undefined symbol is all there is). A call of a function defined in the object (a BPF
    // subprogram) is refused: this loader has no function-by-function layout.
    private static BpfKfuncReference KfuncCall(ReadOnlySpan<byte> elf, Section target, string targetName, ulong offset, ulong symbolIndex, ReadOnlySpan<byte> symbols, ReadOnlySpan<byte> symbolNames, int symbolCount)
    {
        if (offset % 8 != 0 || offset > target.Size || target.Size - offset < 8)
        {
            throw new FormatException($"A call relocation in {targetName} at offset {offset} is not a whole instruction inside the section.");
        }

        if (symbolIndex >= (ulong)symbolCount)
        {
            throw new FormatException($"A relocation in {targetName} names symbol {symbolIndex}, past the {symbolCount} symbols.");
        }

        ReadOnlySpan<byte> instruction = Slice(Data(elf, target), offset, 8);
        if (instruction[0] != OpCall || (instruction[1] >> 4) != PseudoCall)
        {
            throw new FormatException($"A 32-bit relocation in {targetName} at offset {offset} is not a call (only kernel function calls are supported).");
        }

        ReadOnlySpan<byte> symbol = symbols.Slice((int)symbolIndex * SymbolSize, SymbolSize);
        string name = CString(symbolNames, U32(symbol, 0));
        if (U16(symbol, 6) != SectionUndefined)
        {
            throw new FormatException($"{targetName} calls {name}, a function of the object itself (calls between BPF functions are not supported).");
        }

        return new BpfKfuncReference((int)(offset / 8), name);
    }

    private static ReadOnlySpan<byte> Data(ReadOnlySpan<byte> elf, Section section) => Slice(elf, section.Offset, section.Size);

    private static ReadOnlySpan<byte> Slice(ReadOnlySpan<byte> data, ulong offset, ulong length)
        => offset > (ulong)data.Length || length > (ulong)data.Length - offset
            ? throw new FormatException("The BPF object is truncated.")
            : data.Slice((int)offset, (int)length);

    private static string CString(ReadOnlySpan<byte> table, uint offset)
    {
        ReadOnlySpan<byte> rest = Slice(table, offset, (ulong)table.Length - offset);
        int end = rest.IndexOf((byte)0);
        return Encoding.ASCII.GetString(end < 0 ? rest : rest[..end]);
    }

    private static ushort U16(ReadOnlySpan<byte> data, int offset) => BinaryPrimitives.ReadUInt16LittleEndian(data[offset..]);

    private static uint U32(ReadOnlySpan<byte> data, int offset) => BinaryPrimitives.ReadUInt32LittleEndian(data[offset..]);

    private static ulong U64(ReadOnlySpan<byte> data, int offset) => BinaryPrimitives.ReadUInt64LittleEndian(data[offset..]);

    private readonly record struct Section(uint NameOffset, uint Type, ulong Flags, ulong Offset, ulong Size, uint Link, uint Info);
}

/// <summary>One program section: its raw instructions (8 bytes each), the map references and the kernel function calls to patch.</summary>
internal sealed record BpfElfProgram(string Section, byte[] Instructions, IReadOnlyList<BpfMapReference> MapReferences, IReadOnlyList<BpfKfuncReference> KfuncReferences);

/// <summary>Instruction <see cref="InstructionIndex"/> calls the kernel function <see cref="Name"/> (a kfunc).</summary>
internal readonly record struct BpfKfuncReference(int InstructionIndex, string Name);

/// <summary>Instruction <see cref="InstructionIndex"/> loads the address of map <see cref="MapName"/>.</summary>
internal readonly record struct BpfMapReference(int InstructionIndex, string MapName);

/// <summary>A map as declared in the object (struct dispatch_map_def in bpf/dispatch.h).</summary>
internal sealed record BpfMapDefinition(string Name, uint Type, uint KeySize, uint ValueSize, uint MaxEntries, uint Flags);
