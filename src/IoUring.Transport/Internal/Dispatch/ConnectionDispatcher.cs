using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Bpf;
using IoUring.Interop;
using IoUring.Sockets;
using Microsoft.Extensions.Logging;

namespace IoUring.Transport.Internal;

/// <summary>
/// Connection dispatch for one ring group: pins the rings for <see cref="ConnectionDispatch.IncomingCpu"/>,
/// owns the shared load map for <see cref="ConnectionDispatch.LeastConnections"/>, and attaches the
/// chosen program to each TCP listener's reuseport group (<see cref="Attach"/>). Started right
/// after the rings, disposed right after they stop.
/// </summary>
internal sealed unsafe class ConnectionDispatcher : IDisposable
{
    private readonly RingGroup _group;
    private readonly IoUringTransportOptions _options;
    private readonly ILogger _logger;
    private List<int> _allowedCpus = [];   // IncomingCpu: the CPUs this process may run on, ascending
    private BpfFd? _loadMap;          // LeastConnections: one struct ring_load per ring
    private byte* _loadMemory;        // its mapping (shared with the kernel)
    private nuint _loadMemoryLength;

    private ConnectionDispatcher(RingGroup group, IoUringTransportOptions options, ILogger logger, ConnectionDispatch mode)
    {
        _group = group;
        _options = options;
        _logger = logger;
        Mode = mode;
    }

    /// <summary>The mode attached to new listeners: the requested one, or Kernel after a start-up fallback.</summary>
    public ConnectionDispatch Mode { get; private set; }

    /// <summary>
    /// The mode every listener actually has: <see cref="Mode"/>, or Kernel once attaching the program
    /// to any listener fell back to the kernel's hash (that listener's connections are not balanced,
    /// so reporting the requested mode would not be true of all of them). Later listeners still try.
    /// </summary>
    public ConnectionDispatch EffectiveMode => Volatile.Read(ref _attachFellBack) ? ConnectionDispatch.Kernel : Mode;

    private bool _attachFellBack;

    /// <summary>
    /// Sets up <see cref="IoUringTransportOptions.Dispatch"/> for <paramref name="group"/>. A mode that
    /// cannot be set up falls back to Kernel with one warning, or throws when
    /// <see cref="IoUringTransportOptions.FallbackToKernelDispatch"/> is false.
    /// </summary>
    public static ConnectionDispatcher Start(RingGroup group, IoUringTransportOptions options, ILogger logger)
    {
        var dispatcher = new ConnectionDispatcher(group, options, logger, options.Dispatch);
        switch (options.Dispatch)
        {
            case ConnectionDispatch.IncomingCpu:
                dispatcher._allowedCpus = CpuAffinity.GetCurrentThread();
                if (dispatcher._allowedCpus.Count != group.Rings.Length)
                {
                    IoUringTransportLog.RingCountDiffersFromCpus(logger, group.Rings.Length, dispatcher._allowedCpus.Count);
                }

                try
                {
                    dispatcher.PinRings();
                }
                catch (IoUringException ex)
                {
                    // sched_setaffinity refused (a seccomp profile, say): the program still sends each
                    // connection to the ring of its SYN's CPU; only the ring may run elsewhere.
                    IoUringTransportLog.RingPinningFailed(logger, ex.Message);
                }

                break;
            case ConnectionDispatch.LeastConnections:
                try
                {
                    if (group.Rings.Length > DispatchProgram.MaxRings)
                    {
                        // The options allow no more today; this keeps the two limits from drifting apart.
                        throw new NotSupportedException($"LeastConnections scans at most {DispatchProgram.MaxRings} rings (DISPATCH_MAX_RINGS), and RingCount is {group.Rings.Length}.");
                    }

                    dispatcher.CreateLoadMap();
                    using (ListenerPrograms trial = dispatcher.LoadLeastConnections(sockets: null))
                    {
                        // Loading once here proves privilege and verifier acceptance at start, not at the first bind.
                    }
                }
                catch (Exception ex)
                {
                    // Any failure, not only the kernel's refusal: an embedded object that does not
                    // parse (FormatException, InvalidDataException) must not leave the map, its
                    // mapping and the rings' slots behind. No listener exists yet, so no ring has a
                    // connection that could publish a count.
                    dispatcher.ReleaseLoadMap();
                    dispatcher.Fail(ex);
                }

                break;
        }

        IoUringTransportLog.DispatchStarted(logger, options.Dispatch, dispatcher.Mode, group.Rings.Length);
        return dispatcher;
    }

    /// <summary>
    /// Attaches the mode's program to the reuseport group of <paramref name="listeners"/> (listener i
    /// belongs to ring i and joined the group i-th). Returns what must be closed with the listener,
    /// or null when the kernel's hash decides.
    /// </summary>
    public ListenerPrograms? Attach(int[] listeners)
    {
        switch (Mode)
        {
            case ConnectionDispatch.IncomingCpu:
                // The return value indexes the group, whose sockets are numbered in the order of their
                // listen() calls (socket(7), SO_ATTACH_REUSEPORT_CBPF): ring order, because the
                // listeners listen in ring order. When a socket leaves the group (close), the last
                // socket moves into its place (same page). So after ring k fails and its listener
                // closes, index k reaches the last ring, and the last index is past the group, where
                // the kernel's hash picks: CPU k's connections and the last ring's CPUs' connections
                // all land on live rings, but no longer on their pinned CPU's ring. The kernel copies
                // the program into the group; nothing stays open on our side.
                LinuxSocket.AttachReuseportCbpf(listeners[0], IncomingCpuProgram(_allowedCpus, listeners.Length));
                return null;

            case ConnectionDispatch.LeastConnections:
                ListenerPrograms? programs = null;
                try
                {
                    BpfFd sockets = BpfSyscall.CreateMap(BpfSyscall.MapTypeReuseportSockArray, 4, 8, (uint)listeners.Length, 0, "ring_sockets");
                    programs = LoadLeastConnections(sockets);
                    for (uint ring = 0; ring < listeners.Length; ring++)
                    {
                        ulong fd = (ulong)listeners[ring];
                        BpfSyscall.UpdateElement(sockets, &ring, &fd);
                    }

                    LinuxSocket.AttachReuseportEbpf(listeners[0], programs.Program.Value);
                    return programs;
                }
                catch (Exception ex) when (_options.FallbackToKernelDispatch)
                {
                    programs?.Dispose();
                    IoUringTransportLog.DispatchFallback(_logger, ConnectionDispatch.LeastConnections, Reason(ex));
                    Volatile.Write(ref _attachFellBack, true);
                    return null;
                }
                catch
                {
                    programs?.Dispose();
                    throw;
                }

            default:
                return null;
        }
    }

    /// <summary>A ring accepted a connection from a listener this dispatcher attached to (ring thread).</summary>
    public static void OnAccepted(RingThread ring) => ring.Load?.CountAccepted();

    private void Fail(Exception ex)
    {
        if (!_options.FallbackToKernelDispatch)
        {
            throw new InvalidOperationException($"Connection dispatch {_options.Dispatch} cannot be set up, and FallbackToKernelDispatch is false: {Reason(ex)}", ex);
        }

        IoUringTransportLog.DispatchFallback(_logger, _options.Dispatch, Reason(ex));
        Mode = ConnectionDispatch.Kernel;
    }

    private static string Reason(Exception ex) => ex is BpfException { Errno: Errno.EPERM }
        ? $"it needs CAP_BPF and CAP_NET_ADMIN, which this process lacks ({ex.Message})"
        : ex.Message;

    /// <summary>
    /// IncomingCpu's ring for each CPU: the CPU's rank in <paramref name="allowed"/> (the process's
    /// CPUs, ascending) modulo <paramref name="rings"/>. The CPU the program sees (SKF_AD_CPU) is the
    /// host CPU that ran the softirq, so with a cpuset such as 2,3,6,7 the CPU number itself modulo
    /// the ring count would leave rings without CPUs and stack others; the rank spreads the allowed
    /// CPUs round-robin over the rings.
    /// </summary>
    internal static Dictionary<int, int> RingOfCpu(IReadOnlyList<int> allowed, int rings)
    {
        var table = new Dictionary<int, int>(allowed.Count);
        int rank = 0;
        foreach (int cpu in allowed.Order())
        {
            table[cpu] = rank++ % rings;
        }

        return table;
    }

    /// <summary>
    /// The classic program for IncomingCpu over <paramref name="rings"/> listeners:
    /// <c>ld cpu; jeq #c0, 0, 1; ret #r0; jeq #c1, 0, 1; ret #r1; ...; ret #rings</c>. A CPU outside the
    /// table (not in our cpuset, say a softirq on another CPU) returns <paramref name="rings"/>, an
    /// index past the group, for which the kernel falls back to its hash (reuseport_select_sock,
    /// net/core/sock_reuseport.c). A table too long for BPF_MAXINSNS falls back to <c>cpu % rings</c>.
    /// </summary>
    internal static SockFilter[] IncomingCpuProgram(IReadOnlyList<int> allowed, int rings)
    {
        Dictionary<int, int> table = RingOfCpu(allowed, rings);
        if ((2 * table.Count) + 2 > SockFilter.MaxInstructions)
        {
            return [SockFilter.LoadCpu(), SockFilter.ModuloConstant((uint)rings), SockFilter.ReturnAccumulator()];
        }

        var program = new List<SockFilter>((2 * table.Count) + 2) { SockFilter.LoadCpu() };
        foreach ((int cpu, int ring) in table.OrderBy(entry => entry.Key))
        {
            program.Add(SockFilter.JumpIfEqual((uint)cpu, 0, 1));
            program.Add(SockFilter.ReturnConstant((uint)ring));
        }

        program.Add(SockFilter.ReturnConstant((uint)rings));
        return [.. program];
    }

    /// <summary>
    /// Ring i runs on the CPUs that <see cref="RingOfCpu"/> maps to i, matching the cBPF program.
    /// Returns once every ring thread has pinned itself, so the first connection finds them pinned.
    /// </summary>
    private void PinRings()
    {
        RingThread[] rings = _group.Rings;
        Dictionary<int, int> table = RingOfCpu(_allowedCpus, rings.Length);
        var pins = new List<PinWork>();
        foreach (RingThread ring in rings)
        {
            int[] cpus = table.Where(entry => entry.Value == ring.Index).Select(entry => entry.Key).Order().ToArray();
            if (cpus.Length == 0)
            {
                // More rings than CPUs: no CPU maps here, the ring runs anywhere and the program
                // sends it no TCP connection.
                continue;
            }

            // Affinity is per thread, so each ring thread sets its own.
            var pin = new PinWork(cpus);
            pins.Add(pin);
            ring.Post(pin, 0);
        }

        foreach (PinWork pin in pins)
        {
            pin.Done.Task.GetAwaiter().GetResult();
        }
    }

    private void CreateLoadMap()
    {
        int rings = _group.Rings.Length;
        _loadMap = BpfSyscall.CreateMap(BpfSyscall.MapTypeArray, 4, DispatchProgram.LoadEntrySize, (uint)rings, BpfSyscall.MapFlagMmapable, "ring_load");
        _options.TestHooks?.CreatedBpfObjects.Add(("map", BpfSyscall.GetId(_loadMap)));

        // BPF_F_MMAPABLE array maps can be mapped since kernel commit fc9702273e2e ("bpf: Add mmap()
        // support for BPF_MAP_TYPE_ARRAY", Linux 5.5). The values start at offset 0 of the mapping,
        // round_up(value_size, 8) apart (array->elem_size, kernel/bpf/arraymap.c); LoadEntrySize is
        // already a multiple of 8. The kernel zeroes them. See RingLoadSlot for who writes what.
        _loadMemoryLength = (nuint)(((rings * DispatchProgram.LoadEntrySize) + Environment.SystemPageSize - 1) / Environment.SystemPageSize * Environment.SystemPageSize);
        void* memory = Libc.Mmap(null, _loadMemoryLength, Libc.ProtRead | Libc.ProtWrite, Libc.MapShared, _loadMap.Value, 0);
        if (memory == Libc.MapFailed)
        {
            throw new BpfException("mmap(ring_load)", Libc.LastErrno);
        }

        _loadMemory = (byte*)memory;
        foreach (RingThread ring in _group.Rings)
        {
            var slot = new RingLoadSlot((long*)(_loadMemory + (ring.Index * DispatchProgram.LoadEntrySize)));
            slot.PublishRingCount(rings);
            ring.Load = slot;
        }
    }

    /// <summary>Loads the program against <paramref name="sockets"/> (a one-slot placeholder map when null, for the start-up trial).</summary>
    private ListenerPrograms LoadLeastConnections(BpfFd? sockets)
    {
        sockets ??= BpfSyscall.CreateMap(BpfSyscall.MapTypeReuseportSockArray, 4, 8, 1, 0, "ring_sockets");
        try
        {
            byte[] instructions = BpfElfObject.Relocate(DispatchProgram.Program, map => map switch
            {
                DispatchProgram.SocketsMap => sockets.Value,
                DispatchProgram.LoadMap => _loadMap!.Value,
                _ => throw new InvalidOperationException($"The dispatch program references an unknown map {map}."),
            });
            BpfFd program = BpfSyscall.LoadProgram(
                BpfSyscall.ProgTypeSkReuseport, BpfSyscall.AttachTypeSkReuseportSelect, instructions, DispatchProgram.Object.License, "least_conns");
            ListenerPrograms programs;
            try
            {
                programs = new ListenerPrograms(program, sockets);
            }
            catch
            {
                program.Dispose();
                throw;
            }

            _options.TestHooks?.CreatedBpfObjects.Add(("program", programs.ProgramId));
            _options.TestHooks?.CreatedBpfObjects.Add(("map", programs.SocketsMapId));
            return programs;
        }
        catch
        {
            sockets.Dispose();
            throw;
        }
    }

    /// <summary>Unmaps and closes the load map. Call after the rings stopped: a ring still running could store into it.</summary>
    public void Dispose()
    {
        if (_group.Rings.Any(ring => ring.IsRunning))
        {
            // A ring whose stop timed out may still publish its count: leave the mapping (and with it
            // the map) alive rather than let it write into unmapped memory.
            return;
        }

        ReleaseLoadMap();
    }

    private void ReleaseLoadMap()
    {
        foreach (RingThread ring in _group.Rings)
        {
            ring.Load = null;
        }

        if (_loadMemory != null)
        {
            _ = Libc.Munmap(_loadMemory, _loadMemoryLength);
            _loadMemory = null;
        }

        _loadMap?.Dispose();
        _loadMap = null;
    }

    private sealed class PinWork(int[] cpus) : IRingWork
    {
        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Execute(RingThread ring, int operation)
        {
            try
            {
                CpuAffinity.SetCurrentThread(cpus);
                Done.TrySetResult();
            }
            catch (IoUringException ex)
            {
                // Reported to the starting thread; the ring itself is fine unpinned.
                Done.TrySetException(ex);
            }
        }

        public void Reject(int operation, Exception error) => Done.TrySetException(error); // the ring died first
    }
}
