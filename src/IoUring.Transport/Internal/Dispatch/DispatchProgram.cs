using System;
using System.IO;
using IoUring.Bpf;

namespace IoUring.Transport.Internal;

/// <summary>
/// The LeastConnections program, read from the object compiled from bpf/least_connections.bpf.c and
/// embedded in this assembly (rebuilt by bpf/Makefile; a test checks the embedded bytes match the source).
/// </summary>
internal static class DispatchProgram
{
    public const string ResourceName = "IoUring.Transport.Bpf.least_connections.bpf.o";
    public const string SectionName = "sk_reuseport";
    public const string SocketsMap = "ring_sockets";
    public const string LoadMap = "ring_load";

    /// <summary>DISPATCH_MAX_RINGS (bpf/dispatch.h): the program scans at most this many rings.</summary>
    public const int MaxRings = 1024;

    /// <summary>sizeof(struct ring_load): one cache line per ring.</summary>
    public const int LoadEntrySize = 64;

    private static readonly Lazy<BpfElfObject> s_object = new(Read);

    public static BpfElfObject Object => s_object.Value;

    public static BpfElfProgram Program => Object.Programs[SectionName];

    /// <summary>Reads an object compiled from bpf/ and embedded in this assembly under <paramref name="resourceName"/> (see the .csproj).</summary>
    internal static BpfElfObject ReadEmbedded(string resourceName)
    {
        using Stream stream = typeof(DispatchProgram).Assembly.GetManifestResourceStream(resourceName)
            ?? throw new InvalidOperationException($"The embedded BPF object {resourceName} is missing from {typeof(DispatchProgram).Assembly.GetName().Name}.");
        byte[] bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return BpfElfObject.Parse(bytes);
    }

    private static BpfElfObject Read()
    {
        BpfElfObject elf = ReadEmbedded(ResourceName);

        // The loader creates the maps itself; make sure the object means the same maps.
        Expect(elf, SocketsMap, BpfSyscall.MapTypeReuseportSockArray, 4, 8, 0);
        Expect(elf, LoadMap, BpfSyscall.MapTypeArray, 4, LoadEntrySize, BpfSyscall.MapFlagMmapable);
        return elf;
    }

    private static void Expect(BpfElfObject elf, string name, uint type, uint keySize, uint valueSize, uint flags)
    {
        if (!elf.Maps.TryGetValue(name, out BpfMapDefinition? map) || map.Type != type || map.KeySize != keySize || map.ValueSize != valueSize || map.Flags != flags)
        {
            throw new InvalidDataException($"The embedded BPF object's map {name} does not match what the loader creates.");
        }
    }
}
