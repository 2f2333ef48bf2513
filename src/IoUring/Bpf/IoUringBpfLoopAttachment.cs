using System;

namespace IoUring.Bpf;

/// <summary>
/// A BPF loop program attached to a ring: the program, its struct_ops map and the link that
/// registered the map with the ring. Disposing closes the link first, which detaches the program
/// from the ring at once (bpf_struct_ops_map_link_dealloc calls the ring's unreg), then the map
/// and the program, which the kernel frees when nothing else holds them.
/// </summary>
internal sealed class IoUringBpfLoopAttachment : IDisposable
{
    private readonly BpfFd _program;
    private readonly BpfFd _map;
    private readonly BpfFd _link;

    public IoUringBpfLoopAttachment(BpfFd program, BpfFd map, BpfFd link)
    {
        _program = program;
        _map = map;
        _link = link;
        ProgramId = BpfSyscall.GetId(program);
        MapId = BpfSyscall.GetId(map);
        LinkId = BpfSyscall.GetId(link);
    }

    /// <summary>The kernel-wide ids (bpftool prog/map/link show), for tests and diagnostics.</summary>
    public uint ProgramId { get; }

    /// <inheritdoc cref="ProgramId"/>
    public uint MapId { get; }

    /// <inheritdoc cref="ProgramId"/>
    public uint LinkId { get; }

    public void Dispose()
    {
        _link.Dispose();
        _map.Dispose();
        _program.Dispose();
    }
}
