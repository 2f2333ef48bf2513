using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using IoUring.Bpf;
using Xunit;

namespace IoUring.Tests.Bpf;

/// <summary>The committed BPF objects: they match their sources, and the loader's ELF reader understands them.</summary>
public class BpfObjectTests
{
    internal static string BpfDirectory
    {
        get
        {
            var directory = new DirectoryInfo(AppContext.BaseDirectory);
            while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Transport.sln")))
            {
                directory = directory.Parent;
            }

            Assert.NotNull(directory);
            return Path.Combine(directory.FullName, "bpf");
        }
    }

    [Fact]
    public void RebuildingFromSourceReproducesTheCommittedObjects()
    {
        foreach (string tool in new[] { "make", "clang" })
        {
            if (!OnPath(tool))
            {
                Assert.Skip($"{tool} is not installed (scripts/setup.sh installs it; CI runs this check).");
            }
        }

        string pinned = File.ReadAllText(Path.Combine(BpfDirectory, "CLANG_VERSION")).Trim();
        string installed = ClangMajorVersion();
        if (installed != pinned)
        {
            Assert.Skip($"The committed objects were built with clang {pinned} (bpf/CLANG_VERSION); this machine has clang {installed}, which may emit other bytes.");
        }

        string output = Path.Combine(Path.GetTempPath(), "iouring-bpf-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(output);
        try
        {
            var start = new ProcessStartInfo("make", ["-s", "-B", "-C", BpfDirectory, "OUT=" + output])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using Process make = Process.Start(start)!;
            string log = make.StandardOutput.ReadToEnd() + make.StandardError.ReadToEnd();
            make.WaitForExit();
            Assert.True(make.ExitCode == 0, "make failed:\n" + log);

            string[] committed = Directory.GetFiles(BpfDirectory, "*.bpf.o");
            string[] sources = Directory.GetFiles(BpfDirectory, "*.bpf.c");
            Assert.NotEmpty(committed);
            Assert.Equal(sources.Length, committed.Length);
            foreach (string file in committed)
            {
                byte[] rebuilt = File.ReadAllBytes(Path.Combine(output, Path.GetFileName(file)));
                Assert.True(rebuilt.AsSpan().SequenceEqual(File.ReadAllBytes(file)),
                    $"{Path.GetFileName(file)} differs from what its source compiles to: run `make -C bpf` and commit the object.");
            }
        }
        finally
        {
            Directory.Delete(output, recursive: true);
        }
    }

    [Fact]
    public void TheElfReaderFindsTheProgramItsMapReferencesAndItsLicence()
    {
        BpfElfObject elf = BpfElfObject.Parse(File.ReadAllBytes(Path.Combine(BpfDirectory, "least_connections.bpf.o")));

        Assert.Equal("Dual MIT/GPL", elf.License);
        BpfElfProgram program = Assert.Single(elf.Programs).Value;
        Assert.Equal("sk_reuseport", program.Section);
        Assert.Equal(0, program.Instructions.Length % 8);
        Assert.Equal(["ring_load", "ring_sockets"], program.MapReferences.Select(r => r.MapName).Distinct().Order());

        BpfMapDefinition sockets = elf.Maps["ring_sockets"];
        Assert.Equal(BpfSyscall.MapTypeReuseportSockArray, sockets.Type);
        Assert.Equal((4u, 8u), (sockets.KeySize, sockets.ValueSize));
        BpfMapDefinition load = elf.Maps["ring_load"];
        Assert.Equal(BpfSyscall.MapTypeArray, load.Type);
        Assert.Equal((4u, 64u, BpfSyscall.MapFlagMmapable), (load.KeySize, load.ValueSize, load.Flags));
    }

    [Fact]
    public void RelocationTurnsEachMapReferenceIntoAMapDescriptorLoad()
    {
        BpfElfObject elf = BpfElfObject.Parse(File.ReadAllBytes(Path.Combine(BpfDirectory, "least_connections.bpf.o")));
        BpfElfProgram program = elf.Programs["sk_reuseport"];

        byte[] relocated = BpfElfObject.Relocate(program, map => map == "ring_sockets" ? 41 : 42);

        foreach (BpfMapReference reference in program.MapReferences)
        {
            ReadOnlySpan<byte> instruction = relocated.AsSpan(reference.InstructionIndex * 8, 16);
            Assert.Equal(0x18, instruction[0]); // ld_imm64
            Assert.Equal(1, instruction[1] >> 4); // src_reg = BPF_PSEUDO_MAP_FD
            Assert.Equal(program.Instructions[(reference.InstructionIndex * 8) + 1] & 0x0F, instruction[1] & 0x0F); // dst_reg kept
            Assert.Equal(reference.MapName == "ring_sockets" ? 41 : 42, BinaryPrimitives.ReadInt32LittleEndian(instruction[4..]));
        }

        // Everything else is untouched.
        int[] patched = program.MapReferences.SelectMany(r => new[] { r.InstructionIndex, r.InstructionIndex + 1 }).ToArray();
        for (int i = 0; i < relocated.Length / 8; i++)
        {
            if (!patched.Contains(i))
            {
                Assert.True(relocated.AsSpan(i * 8, 8).SequenceEqual(program.Instructions.AsSpan(i * 8, 8)), $"instruction {i} changed");
            }
        }
    }

    [Fact]
    public void TheElfReaderFindsTheLoopProbesKernelFunctionCallsAndRelocatesThemToKfuncCalls()
    {
        BpfElfObject elf = BpfElfObject.Parse(File.ReadAllBytes(Path.Combine(BpfDirectory, "loop_probe.bpf.o")));

        Assert.Equal("Dual MIT/GPL", elf.License);
        Assert.Empty(elf.Maps);
        BpfElfProgram program = Assert.Single(elf.Programs).Value;
        Assert.Equal("struct_ops.s/loop_step", program.Section);
        Assert.Empty(program.MapReferences);
        Assert.Equal(
            [IoUringBpfLoop.RegionKfunc, IoUringBpfLoop.RegionKfunc, IoUringBpfLoop.RegionKfunc, IoUringBpfLoop.SubmitKfunc],
            program.KfuncReferences.Select(k => k.Name));

        byte[] relocated = BpfElfObject.Relocate(program, _ => throw new InvalidOperationException(), name => name == IoUringBpfLoop.SubmitKfunc ? 1001 : 1002);

        foreach (BpfKfuncReference call in program.KfuncReferences)
        {
            ReadOnlySpan<byte> instruction = relocated.AsSpan(call.InstructionIndex * 8, 8);
            Assert.Equal(0x85, instruction[0]);     // call
            Assert.Equal(2, instruction[1] >> 4);   // src_reg = BPF_PSEUDO_KFUNC_CALL
            Assert.Equal(0, BinaryPrimitives.ReadInt16LittleEndian(instruction[2..])); // off 0: vmlinux's BTF
            Assert.Equal(call.Name == IoUringBpfLoop.SubmitKfunc ? 1001 : 1002, BinaryPrimitives.ReadInt32LittleEndian(instruction[4..]));
        }

        // Without a resolver for kernel functions (the sk_reuseport path), the program is refused.
        Assert.Throws<FormatException>(() => BpfElfObject.Relocate(program, _ => 0));
    }

    [Fact]
    public void TheReaderRefusesWhatIsNotABpfObject()
    {
        Assert.Throws<FormatException>(() => BpfElfObject.Parse(new byte[100]));
        byte[] truncated = File.ReadAllBytes(Path.Combine(BpfDirectory, "least_connections.bpf.o"))[..200];
        Assert.Throws<FormatException>(() => BpfElfObject.Parse(truncated));
    }

    [Theory]
    [InlineData("section header size below 64")]
    [InlineData("section name table index past the sections")]
    [InlineData("symbol table link past the sections")]
    [InlineData("relocation symbol index past the symbols")]
    [InlineData("relocation offset not instruction-aligned")]
    [InlineData("relocation on the last instruction (half an ld_imm64)")]
    [InlineData("relocation offset past the section")]
    [InlineData("program section not executable")]
    public void TheReaderRefusesACorruptedObjectWithAFormatException(string corruption)
    {
        byte[] elf = File.ReadAllBytes(Path.Combine(BpfDirectory, "least_connections.bpf.o"));
        _ = BpfElfObject.Parse(elf); // intact, it parses
        Span<byte> bytes = elf;
        int sectionTable = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes[0x28..]);
        int sectionCount = BinaryPrimitives.ReadUInt16LittleEndian(bytes[0x3C..]);
        Span<byte> Header(int index) => elf.AsSpan(sectionTable + (index * 64), 64);
        int symtab = Enumerable.Range(0, sectionCount).Single(i => BinaryPrimitives.ReadUInt32LittleEndian(Header(i)[4..]) == 2);
        int rel = Enumerable.Range(0, sectionCount).First(i => BinaryPrimitives.ReadUInt32LittleEndian(Header(i)[4..]) == 9);
        int program = (int)BinaryPrimitives.ReadUInt32LittleEndian(Header(rel)[44..]);
        Span<byte> firstRelocation = elf.AsSpan((int)BinaryPrimitives.ReadUInt64LittleEndian(Header(rel)[24..]), 16);
        ulong programSize = BinaryPrimitives.ReadUInt64LittleEndian(Header(program)[32..]);

        switch (corruption)
        {
            case "section header size below 64":
                BinaryPrimitives.WriteUInt16LittleEndian(bytes[0x3A..], 40);
                break;
            case "section name table index past the sections":
                BinaryPrimitives.WriteUInt16LittleEndian(bytes[0x3E..], (ushort)sectionCount);
                break;
            case "symbol table link past the sections":
                BinaryPrimitives.WriteUInt32LittleEndian(Header(symtab)[40..], 0xFFFF);
                break;
            case "relocation symbol index past the symbols":
                BinaryPrimitives.WriteUInt32LittleEndian(firstRelocation[12..], 0xFFFFFFFF); // high half of r_info
                break;
            case "relocation offset not instruction-aligned":
                BinaryPrimitives.WriteUInt64LittleEndian(firstRelocation, BinaryPrimitives.ReadUInt64LittleEndian(firstRelocation) + 4);
                break;
            case "relocation on the last instruction (half an ld_imm64)":
                BinaryPrimitives.WriteUInt64LittleEndian(firstRelocation, programSize - 8);
                break;
            case "relocation offset past the section":
                BinaryPrimitives.WriteUInt64LittleEndian(firstRelocation, ulong.MaxValue - 7);
                break;
            case "program section not executable":
                BinaryPrimitives.WriteUInt64LittleEndian(Header(program)[8..], BinaryPrimitives.ReadUInt64LittleEndian(Header(program)[8..]) & ~4UL);
                break;
            default:
                Assert.Fail(corruption);
                break;
        }

        Assert.Throws<FormatException>(() => BpfElfObject.Parse(elf));
    }

    [Fact]
    public void BtfLookupFindsStructsAndFunctionsOfTheRunningKernelByKind()
    {
        if (!File.Exists("/sys/kernel/btf/vmlinux"))
        {
            Assert.Skip("The kernel exposes no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF).");
        }

        HashSet<(int Kind, string Name)>? found = BtfTypes.Find(
        [
            (BtfTypes.KindStruct, "sk_reuseport_md"),
            (BtfTypes.KindFunc, "tcp_v4_connect"),
            (BtfTypes.KindFunc, "sk_reuseport_md"),        // right name, wrong kind
            (BtfTypes.KindStruct, "no_such_struct_anywhere"),
        ]);

        Assert.NotNull(found);
        Assert.Equal([(BtfTypes.KindStruct, "sk_reuseport_md"), (BtfTypes.KindFunc, "tcp_v4_connect")], found.OrderBy(f => f.Name, StringComparer.Ordinal));
        Assert.Null(BtfTypes.Find([(BtfTypes.KindStruct, "x")], "/nonexistent/btf"));
    }

    [Fact]
    public void TheKernelsBtfDescribesTheIoUringBpfEventLoopExactlyFromLinux71()
    {
        if (!File.Exists(BtfTypes.VmlinuxPath))
        {
            Assert.Skip("The kernel exposes no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF).");
        }

        // What a loop program needs (Linux 7.1): the struct_ops type, its parameters, and both kfuncs.
        (int Kind, string Name)[] loop =
        [
            (BtfTypes.KindStruct, IoUringBpfLoop.OpsType),
            (BtfTypes.KindStruct, "iou_loop_params"),
            (BtfTypes.KindFunc, IoUringBpfLoop.SubmitKfunc),
            (BtfTypes.KindFunc, IoUringBpfLoop.RegionKfunc),
        ];
        HashSet<(int Kind, string Name)> found = BtfTypes.Find(loop)!;
        bool expected = Environment.OSVersion.Version >= new Version(7, 1);
        Assert.True(
            found.Count == (expected ? loop.Length : 0),
            $"Linux {Environment.OSVersion.Version}: expected {(expected ? "all" : "none")} of the loop's types in its BTF, found {string.Join(", ", found.Select(f => f.Name))}");
        Assert.Equal(expected, IoUringBpfLoop.IsAvailable());
    }

    /// <summary>The major version from <c>clang --version</c> ("... clang version 14.0.6 ...").</summary>
    private static string ClangMajorVersion()
    {
        using Process clang = Process.Start(new ProcessStartInfo("clang", ["--version"]) { RedirectStandardOutput = true })!;
        string text = clang.StandardOutput.ReadToEnd();
        clang.WaitForExit();
        Assert.True(clang.ExitCode == 0, $"clang --version exited with {clang.ExitCode}");
        System.Text.RegularExpressions.Match version = System.Text.RegularExpressions.Regex.Match(text, @"clang version (\d+)\.");
        Assert.True(version.Success, "clang --version printed no version:\n" + text);
        return version.Groups[1].Value;
    }

    private static bool OnPath(string tool)
        => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(dir => dir.Length > 0 && File.Exists(Path.Combine(dir, tool)));
}
