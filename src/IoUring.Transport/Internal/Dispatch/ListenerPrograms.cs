using System;
using IoUring.Bpf;

namespace IoUring.Transport.Internal;

/// <summary>
/// The BPF objects one TCP listener's reuseport group uses under LeastConnections: the program and
/// its socket map (ring index to that ring's listening socket). Closed when the listener stops, after
/// its sockets: the group keeps its own reference to the program until the last socket closes, and
/// the program keeps the maps, so the kernel frees everything once both are gone.
/// </summary>
internal sealed class ListenerPrograms : IDisposable
{
    public ListenerPrograms(BpfFd program, BpfFd sockets)
    {
        Program = program;
        Sockets = sockets;
        ProgramId = BpfSyscall.GetId(program);
        SocketsMapId = BpfSyscall.GetId(sockets);
    }

    public BpfFd Program { get; }

    public BpfFd Sockets { get; }

    /// <summary>Kernel ids, for tests that check nothing outlives the listener.</summary>
    public uint ProgramId { get; }

    public uint SocketsMapId { get; }

    public void Dispose()
    {
        Program.Dispose();
        Sockets.Dispose();
    }
}
