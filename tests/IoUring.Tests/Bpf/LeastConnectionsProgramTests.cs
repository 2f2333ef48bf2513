using System;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using IoUring.Bpf;
using IoUring.Interop;
using IoUring.Sockets;
using IoUring.Tests.Sockets;
using Xunit;

namespace IoUring.Tests.Bpf;

/// <summary>
/// The committed least-connections program, loaded with the raw bpf() calls and attached to a real
/// two-socket reuseport group, without the transport: it picks the less loaded socket, counts what it
/// dispatches, and leaves the choice to the kernel's hash when the chosen slot is empty.
/// </summary>
public unsafe class LeastConnectionsProgramTests
{
    private const int EntrySize = 64; // struct ring_load

    [Fact]
    public void ConnectionsGoToTheLessLoadedSocketAndAreCounted()
    {
        SkipUnlessBpfCapable();
        using var group = new Group(fillSlot0: true);
        group.SetActive(1, 100); // socket 1 is busy: everything should go to socket 0

        for (int i = 0; i < 10; i++)
        {
            group.Connect();
        }

        Assert.Equal((10, 0), group.AcceptAll());
        Assert.Equal(10UL, group.Dispatched(0));
        Assert.Equal(0UL, group.Dispatched(1));
    }

    [Fact]
    public void AnEmptySlotLeavesTheChoiceToTheKernelsHash()
    {
        SkipUnlessBpfCapable();
        using var group = new Group(fillSlot0: false);
        group.SetActive(1, 100); // the program picks slot 0, which holds no socket

        for (int i = 0; i < 10; i++)
        {
            group.Connect(); // refused if the program dropped it instead of passing it on
        }

        (int first, int second) = group.AcceptAll();
        Assert.Equal(10, first + second);
        Assert.Equal(0UL, group.Dispatched(0)); // nothing was selected, so nothing was counted
        Assert.Equal(0UL, group.Dispatched(1));
    }

    private static void SkipUnlessBpfCapable()
    {
        string? missing = BpfPrivileges.MissingForReuseportPrograms();
        if (missing is not null)
        {
            Assert.Skip($"Loading an sk_reuseport program needs {missing}, which this process lacks.");
        }
    }

    /// <summary>Two listeners on one port, the program attached, the load map mapped.</summary>
    private sealed class Group : IDisposable
    {
        private readonly int[] _listeners = [-1, -1];
        private readonly BpfFd? _load;
        private readonly BpfFd? _sockets;
        private readonly BpfFd? _program;
        private readonly byte* _memory;
        private readonly nuint _length = (nuint)Environment.SystemPageSize;
        private readonly System.Collections.Generic.List<Socket> _clients = [];
        private readonly IPEndPoint _endPoint;

        public Group(bool fillSlot0)
        {
            try
            {
                _listeners[0] = LinuxSocket.CreateListener(new IPEndPoint(IPAddress.Loopback, 0), 64, reusePort: true);
                _endPoint = (IPEndPoint)LinuxSocket.GetLocalEndPoint(_listeners[0])!;
                _listeners[1] = LinuxSocket.CreateListener(_endPoint, 64, reusePort: true);

                BpfFd load = _load = BpfSyscall.CreateMap(BpfSyscall.MapTypeArray, 4, EntrySize, 2, BpfSyscall.MapFlagMmapable, "test_load");
                void* memory = Libc.Mmap(null, _length, Libc.ProtRead | Libc.ProtWrite, Libc.MapShared, load.Value, 0);
                Assert.True(memory != Libc.MapFailed, $"mmap of the load map failed: errno {Libc.LastErrno}");
                _memory = (byte*)memory;
                for (int i = 0; i < 2; i++)
                {
                    Volatile.Write(ref *(long*)(_memory + (i * EntrySize) + 24), 2); // ring_load.rings
                }

                BpfFd sockets = _sockets = BpfSyscall.CreateMap(BpfSyscall.MapTypeReuseportSockArray, 4, 8, 2, 0, "test_sockets");
                for (uint slot = fillSlot0 ? 0u : 1u; slot < 2; slot++)
                {
                    ulong fd = (ulong)_listeners[slot];
                    BpfSyscall.UpdateElement(sockets, &slot, &fd);
                }

                BpfElfObject elf = BpfElfObject.Parse(File.ReadAllBytes(Path.Combine(BpfObjectTests.BpfDirectory, "least_connections.bpf.o")));
                byte[] instructions = BpfElfObject.Relocate(elf.Programs["sk_reuseport"], map => map == "ring_sockets" ? sockets.Value : load.Value);
                BpfFd program = _program = BpfSyscall.LoadProgram(BpfSyscall.ProgTypeSkReuseport, BpfSyscall.AttachTypeSkReuseportSelect, instructions, elf.License, "test_least");
                LinuxSocket.AttachReuseportEbpf(_listeners[0], program.Value);
            }
            catch
            {
                // A failed step (no capability, a refused program) must not leak what came before.
                Dispose();
                throw;
            }
        }

        public void SetActive(int slot, long active) => Volatile.Write(ref *(long*)(_memory + (slot * EntrySize)), active);

        public ulong Dispatched(int slot) => Volatile.Read(ref *(ulong*)(_memory + (slot * EntrySize) + 16));

        public void Connect()
        {
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            _clients.Add(client);
            client.Connect(_endPoint); // returns once the handshake completed: the connection is queued on a listener
        }

        /// <summary>Accepts every client's connection; returns how many each listener had.</summary>
        public (int First, int Second) AcceptAll()
        {
            // A connection joins its listener's queue when the server side has the handshake's last
            // ACK, which may trail the client's connect(): wait for the queues until all have arrived.
            int[] counts = new int[2];
            while (counts[0] + counts[1] < _clients.Count)
            {
                SocketTestHelpers.WaitAnyReadable(_listeners[0], _listeners[1]);
                for (int i = 0; i < 2; i++)
                {
                    int fd;
                    while ((fd = LinuxSocket.Accept(_listeners[i], out _)) >= 0)
                    {
                        Libc.Close(fd);
                        counts[i]++;
                    }
                }
            }

            return (counts[0], counts[1]);
        }

        public void Dispose()
        {
            foreach (Socket client in _clients)
            {
                client.Dispose();
            }

            foreach (int listener in _listeners)
            {
                if (listener >= 0)
                {
                    Libc.Close(listener);
                }
            }

            _program?.Dispose();
            _sockets?.Dispose();
            if (_memory != null)
            {
                _ = Libc.Munmap(_memory, _length);
            }

            _load?.Dispose();
        }
    }
}
