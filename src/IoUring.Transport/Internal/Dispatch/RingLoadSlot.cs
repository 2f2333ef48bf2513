using System.Threading;

namespace IoUring.Transport.Internal;

/// <summary>
/// One ring's entry in the LeastConnections load map (struct ring_load in bpf/dispatch.h), in memory
/// shared with the kernel: the map is BPF_F_MMAPABLE and mapped into this process, so publishing a
/// count is a store, not a system call. The eBPF program reads the entries on every SYN.
/// </summary>
/// <remarks>
/// The mapping: an array map created with BPF_F_MMAPABLE can be mmap()ed (kernel commit fc9702273e2e,
/// "bpf: Add mmap() support for BPF_MAP_TYPE_ARRAY", Linux 5.5); its values lie from offset 0 of the
/// mapping, element i at i * round_up(value_size, 8) (array->elem_size in kernel/bpf/arraymap.c), so
/// with value_size 64 entry i is at i * 64. The program reaches the same memory through
/// bpf_map_lookup_elem and reads it with plain loads; there are no locks or fences on its side.
/// <para>
/// Writers: <c>rings</c> by the loader before any program is attached; <c>active</c> and
/// <c>accepted</c> by this ring's thread only, so it may read its own value and store the next one
/// without an atomic read-modify-write; <c>dispatched</c> by the program with an atomic add (several
/// CPUs may take SYNs at once), only read here. Each field is an aligned 64-bit word, so every store
/// and load is single-copy atomic on the 64-bit architectures we run on and neither side sees a torn
/// value. Volatile.Write adds no ordering the program could rely on; it only keeps the JIT from
/// eliding, caching or splitting the store, which it could otherwise do because nothing in this
/// process reads the memory back. No ordering between the fields is needed: the program uses them
/// as a hint, and a stale count costs balance, never correctness.
/// </para>
/// </remarks>
internal sealed unsafe class RingLoadSlot
{
    private const int ActiveOffset = 0;     // ring_load.active
    private const int AcceptedOffset = 1;   // ring_load.accepted
    private const int DispatchedOffset = 2; // ring_load.dispatched
    private const int RingsOffset = 3;      // ring_load.rings

    /// <summary>
    /// The <c>active</c> count of a ring that failed: larger than any live ring's count, so the program
    /// (which picks the smallest active + pending) never selects it while a live ring remains.
    /// </summary>
    public const long Dead = long.MaxValue;

    private readonly long* _entry;
    private bool _dead; // ring thread only

    public RingLoadSlot(long* entry) => _entry = entry;

    /// <summary>How many rings the program scans; written by the loader before the program is attached.</summary>
    public void PublishRingCount(int rings) => Volatile.Write(ref _entry[RingsOffset], rings);

    /// <summary>The ring's open connections changed (ring thread). Ignored once the ring is <see cref="MarkDead">dead</see>.</summary>
    public void PublishActive(long active)
    {
        if (!_dead)
        {
            Volatile.Write(ref _entry[ActiveOffset], active);
        }
    }

    /// <summary>
    /// The ring failed (ring thread, before its listeners close): publish <see cref="Dead"/> for good.
    /// Without it the ring's count stays frozen at its last value; once the live rings pass it the
    /// program picks the dead ring every time, finds its sockarray slot empty (the kernel clears it
    /// when the listener closes), and every SYN falls to the kernel's hash. The connections the
    /// failure aborts afterwards must not overwrite the marker, hence the flag.
    /// </summary>
    public void MarkDead()
    {
        _dead = true;
        Volatile.Write(ref _entry[ActiveOffset], Dead);
    }

    /// <summary>
    /// The ring accepted one connection from a dispatched listener (ring thread). Stores
    /// min(accepted + 1, dispatched): a connection the program never dispatched (placed by the
    /// kernel's hash while a slot was empty, or completed from a SYN cookie) must not raise accepted
    /// above dispatched, where it would cancel a later dispatched connection still in the accept
    /// queue and hide it from the program.
    /// </summary>
    /// <remarks>
    /// The estimate dispatched - accepted can still drift upwards: a SYN that never becomes an
    /// accepted connection (a scan, a handshake that times out, a retransmitted SYN that the
    /// program counts again) stays pending on its ring. The drift only biases the choice away from
    /// that ring by a few connections; the clamp here keeps it from going the other way.
    /// </remarks>
    public void CountAccepted()
    {
        long dispatched = Volatile.Read(ref _entry[DispatchedOffset]);
        long accepted = _entry[AcceptedOffset] + 1;
        Volatile.Write(ref _entry[AcceptedOffset], accepted < dispatched ? accepted : dispatched);
    }

    /// <summary>What the program currently sees for this ring: open connections, accepted, dispatched (any thread; for tests and logs).</summary>
    public (long Active, long Accepted, long Dispatched) Read()
        => (Volatile.Read(ref _entry[ActiveOffset]), Volatile.Read(ref _entry[AcceptedOffset]), Volatile.Read(ref _entry[DispatchedOffset]));
}
