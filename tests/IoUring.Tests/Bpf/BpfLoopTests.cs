using System;
using System.IO;
using System.Runtime.InteropServices;
using IoUring.Bpf;
using IoUring.Interop;
using IoUring.Tests.Ring;
using Xunit;

namespace IoUring.Tests.Bpf;

/// <summary>
/// The committed loop probe (bpf/loop_probe.bpf.c), loaded with the raw loader and attached to a
/// real ring as its io_uring BPF loop (Linux 7.1+): one io_uring_enter runs it, it submits a NOP
/// through the kfunc, waits for the CQE and stops; one loop per ring; disposing detaches it. On a
/// kernel without the loop, attaching fails naming the missing type.
/// </summary>
public unsafe class BpfLoopTests
{
    private const string Section = "struct_ops.s/loop_step";
    private const ulong NopUserData = 0x6c6f_6f70_0000_0001; // "loop", 1
    private const uint Done = 2; // LOOP_PROBE_DONE

    [Fact]
    public void OneEnterRunsTheProgramWhichSubmitsANopWaitsForItsCqeAndStops()
    {
        RequireLoop();
        using var fixture = new LoopRing();
        using IoUringBpfLoopAttachment loop = fixture.Attach();

        fixture.EnterOnce();

        LoopProbeShared* shared = fixture.Shared;
        Assert.Equal(Done, shared->State);
        Assert.Equal(1, shared->Submitted);      // bpf_io_uring_submit_sqes took the SQE it wrote
        Assert.Equal(1u, shared->WaitIdx);       // it waited for the first CQE of the ring
        Assert.Equal(0, shared->Res);            // and read the NOP's result from it
        // Pass 1 submits and returns CONTINUE; the kernel waits until the CQ tail reaches 1 (or
        // finds it there), calls it again; pass 2 sees the CQE and returns STOP. A signal that
        // interrupts the wait (EINTR) does not add a pass: the next enter goes on with pass 2.
        Assert.Equal(2u, shared->Passes);
        // Whether the NOP's CQE was already posted when the submit kfunc returned (so the kernel
        // found the CQ tail at cq_wait_idx and did not sleep) is the kernel's business; either is
        // a correct run.
        Assert.InRange(shared->CqAfter, 0u, 1u);
        TestContext.Current.TestOutputHelper?.WriteLine($"CQ tail right after bpf_io_uring_submit_sqes: {shared->CqAfter}");

        // The CQE is left in the CQ for user space: the CQ head is user space's.
        Assert.True(fixture.Ring.TryPeekCqe(out Cqe cqe), "the NOP's CQE is not in the CQ");
        Assert.Equal((NopUserData, 0), (cqe.UserData, cqe.Res));
        fixture.Ring.CqAdvance(1);
        Assert.Equal(0u, fixture.Ring.CqReady);

        // Every enter runs it: pass 3 finds the probe done and stops at once, submitting nothing.
        fixture.EnterOnce();
        Assert.Equal(3u, shared->Passes);
        Assert.Equal(0u, fixture.Ring.CqReady);
    }

    [Fact]
    public void AnSqeThatCompletesLaterMakesTheKernelSleepUntilTheCqTailReachesCqWaitIdx()
    {
        RequireLoop();
        using var fixture = new LoopRing();
        // A 1 ms IORING_OP_TIMEOUT instead of the NOP: its CQE comes from the timer, after the
        // submit has returned, so the kernel must sleep in io_loop_wait until it is posted. The
        // timespec sits in the registered page, which is this process's memory (the kernel copies
        // it from the submitting task, io_timeout_prep).
        KernelTimespec* ts = (KernelTimespec*)((byte*)fixture.Shared + 2048);
        *ts = KernelTimespec.FromTimeSpan(TimeSpan.FromMilliseconds(1));
        fixture.Shared->Opcode = IoUringConstants.Op.Timeout;
        fixture.Shared->Addr = (ulong)ts;
        fixture.Shared->Len = 1;
        using IoUringBpfLoopAttachment loop = fixture.Attach();

        fixture.EnterOnce();

        LoopProbeShared* shared = fixture.Shared;
        Assert.Equal(Done, shared->State);
        Assert.Equal(1, shared->Submitted);
        Assert.Equal(0u, shared->CqAfter);        // not completed inline: there was something to wait for
        Assert.Equal(1u, shared->WaitIdx);
        Assert.Equal(-Errno.ETIME, shared->Res);  // a timeout with no count completes when it expires
        Assert.True(shared->Passes >= 2, $"{shared->Passes} passes"); // more if woken early (a hint, io_uring/loop.h)
        TestContext.Current.TestOutputHelper?.WriteLine($"loop_step passes for a 1 ms timeout: {shared->Passes}");
        Assert.True(fixture.Ring.TryPeekCqe(out Cqe cqe), "the timeout's CQE is not in the CQ");
        Assert.Equal((NopUserData, -Errno.ETIME), (cqe.UserData, cqe.Res));
    }

    [Fact]
    public void ASecondLoopOnTheSameRingIsRefusedWithEbusy()
    {
        RequireLoop();
        using var fixture = new LoopRing();
        using IoUringBpfLoopAttachment first = fixture.Attach();

        BpfException refused = Assert.Throws<BpfException>(() => fixture.Attach());

        Assert.Equal(Errno.EBUSY, refused.Errno);
        Assert.Contains("BPF_LINK_CREATE", refused.Message, StringComparison.Ordinal);
        fixture.EnterOnce();
        Assert.Equal(2u, fixture.Shared->Passes); // the first one still runs
    }

    [Fact]
    public void TheRingIsCheckedWhenTheLinkIsCreatedNotWhenTheMapIsUpdated()
    {
        RequireLoop();
        BpfElfObject elf = BpfElfObject.Parse(File.ReadAllBytes(Path.Combine(BpfObjectTests.BpfDirectory, "loop_probe.bpf.o")));

        // A descriptor that is no io_uring: the map update takes ring_fd as a number
        // (bpf_io_init_member); bpf_io_reg, at BPF_LINK_CREATE, finds it is not a ring.
        using (Microsoft.Win32.SafeHandles.SafeFileHandle file = File.OpenHandle("/dev/null"))
        {
            BpfException notARing = Assert.Throws<BpfException>(() => IoUringBpfLoop.Attach((int)file.DangerousGetHandle(), elf, Section));
            Assert.Contains("BPF_LINK_CREATE", notARing.Message, StringComparison.Ordinal);
            Assert.Equal(Errno.EOPNOTSUPP, notARing.Errno);
        }

        // A ring without IORING_SETUP_DEFER_TASKRUN: io_install_bpf refuses it.
        using IoUring.Ring plain = IoUring.Ring.Create(new RingOptions { SqEntries = 8, SingleIssuerDeferTaskRun = false });
        BpfException notDeferred = Assert.Throws<BpfException>(() => IoUringBpfLoop.Attach(plain.Fd, elf, Section));
        Assert.Contains("BPF_LINK_CREATE", notDeferred.Message, StringComparison.Ordinal);
        Assert.Equal(Errno.EOPNOTSUPP, notDeferred.Errno);
    }

    [Fact]
    public void DisposingTheAttachmentDetachesTheLoopAndEnterWorksAsBefore()
    {
        RequireLoop();
        using var fixture = new LoopRing();
        IoUringBpfLoopAttachment loop = fixture.Attach();
        Assert.True(BpfSyscall.LinkExists(loop.LinkId));
        Assert.True(BpfSyscall.MapExists(loop.MapId));

        loop.Dispose();

        // Closing the link unregisters the ops and puts the map; closing the map's descriptor
        // drops its last reference. Both ids are freed at once (the memory later, after RCU).
        Assert.False(BpfSyscall.LinkExists(loop.LinkId), $"link {loop.LinkId} still exists");
        Assert.False(BpfSyscall.MapExists(loop.MapId), $"map {loop.MapId} still exists");

        // The ring's own submit and wait again: a NOP submitted from user space completes, and the
        // program no longer runs.
        fixture.Ring.ResyncSqTail();
        Sqe* sqe = fixture.Ring.GetSqe();
        sqe->PrepNop();
        sqe->UserData = NopUserData + 1;
        Assert.Equal(1, fixture.Ring.SubmitAndWait(1));
        Assert.True(fixture.Ring.TryPeekCqe(out Cqe cqe));
        Assert.Equal((NopUserData + 1, 0), (cqe.UserData, cqe.Res));
        Assert.Equal(0u, fixture.Shared->Passes);
    }

    [Fact]
    public void ClosingTheRingBeforeTheAttachmentLeavesNothingBehind()
    {
        RequireLoop();
        var fixture = new LoopRing();
        IoUringBpfLoopAttachment loop = fixture.Attach();
        fixture.EnterOnce();

        // The link holds no reference to the ring: closing it frees the ring (in the kernel's exit
        // work, io_unregister_bpf_ops ejecting the ops), and the link outlives it, detached or
        // about to be.
        fixture.Dispose();
        Assert.True(BpfSyscall.LinkExists(loop.LinkId));

        // Whichever runs first, the ring's teardown or the link's unreg (bpf_io_unreg, which finds
        // the ops already ejected or ejects them itself), both serialise on io_bpf_ctrl_mutex.
        loop.Dispose();
        Assert.False(BpfSyscall.LinkExists(loop.LinkId), $"link {loop.LinkId} still exists");
        Assert.False(BpfSyscall.MapExists(loop.MapId), $"map {loop.MapId} still exists");
    }

    [Fact]
    public void AttachingWhereTheKernelHasNoLoopFailsNamingTheMissingType()
    {
        // On a kernel without the loop, its own BTF; on one with it, a BTF with no types at all,
        // so the refusal is proven on every kernel.
        bool available = IoUringBpfLoop.IsAvailable();
        string btf = available ? EmptyBtfFile() : BtfTypes.VmlinuxPath;
        try
        {
            using var fixture = new LoopRing();
            BpfException refused = Assert.Throws<BpfException>(() => fixture.Attach(btf));

            Assert.Equal(Errno.EOPNOTSUPP, refused.Errno);
            Assert.Contains(File.Exists(btf) ? "has no struct io_uring_bpf_ops" : "exposes no BTF", refused.Message, StringComparison.Ordinal);
            Assert.Contains("Linux 7.1", refused.Message, StringComparison.Ordinal);
        }
        finally
        {
            if (available)
            {
                File.Delete(btf);
            }
        }
    }

    private static void RequireLoop()
    {
        RingTestHelpers.RequireFeature(IoUringBpfLoop.IsAvailable(), "the io_uring BPF loop (struct io_uring_bpf_ops)", new Version(7, 1));
        string? missing = BpfPrivileges.MissingForStructOps();
        if (missing is not null)
        {
            Assert.Skip($"Loading a struct_ops program needs {missing}, which this process lacks.");
        }
    }

    /// <summary>A valid BTF blob with no types: a 24-byte header and a string table of one NUL.</summary>
    private static string EmptyBtfFile()
    {
        byte[] btf = new byte[25];
        btf[0] = 0x9F; btf[1] = 0xEB; btf[2] = 1; // magic, version
        btf[4] = 24;                               // hdr_len; type_off, type_len, str_off 0
        btf[20] = 1;                               // str_len
        string path = Path.Combine(Path.GetTempPath(), "iouring-empty-btf-" + Guid.NewGuid().ToString("N"));
        File.WriteAllBytes(path, btf);
        return path;
    }

    /// <summary>struct loop_probe_shared (bpf/iou_loop.h).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct LoopProbeShared
    {
        public uint SqTail;
        public uint SqMask;
        public uint CqTail;
        public uint CqMask;
        public uint Cqes;
        public uint Len;
        public ulong UserData;
        public ulong Addr;
        public uint Opcode;
        public uint Reserved0;
        public uint Passes;
        public uint State;
        public int Submitted;
        public uint WaitIdx;
        public int Res;
        public uint CqAfter;
    }

    /// <summary>A small SINGLE_ISSUER | DEFER_TASKRUN ring with a one-page registered memory region holding the probe's state.</summary>
    private sealed class LoopRing : IDisposable
    {
        private static readonly byte[] s_object = File.ReadAllBytes(Path.Combine(BpfObjectTests.BpfDirectory, "loop_probe.bpf.o"));
        private readonly nuint _pageSize = (nuint)Environment.SystemPageSize;
        private readonly void* _page;

        public LoopRing()
        {
            // 8 SQEs (512 bytes) and 16 CQEs: both regions fit the one page the probe maps.
            Ring = IoUring.Ring.Create(new RingOptions { SqEntries = 8, CqEntries = 16 });
            Assert.True(Ring.DeferTaskRun, "the loop needs IORING_SETUP_DEFER_TASKRUN");
            _page = NativeMemory.AlignedAlloc(_pageSize, _pageSize);
            new Span<byte>(_page, (int)_pageSize).Clear();
            Shared = (LoopProbeShared*)_page;
            Shared->SqTail = Ring.SqTailOffset;
            Shared->SqMask = Ring.SqMask;
            Shared->CqTail = Ring.CqTailOffset;
            Shared->CqMask = Ring.CqMask;
            Shared->Cqes = Ring.CqesOffset;
            Shared->UserData = NopUserData;
            if (IoUringBpfLoop.IsAvailable())
            {
                Ring.RegisterMemoryRegion(_page, _pageSize);
            }
        }

        public IoUring.Ring Ring { get; }

        public LoopProbeShared* Shared { get; }

        public IoUringBpfLoopAttachment Attach(string btfPath = BtfTypes.VmlinuxPath)
            => IoUringBpfLoop.Attach(Ring.Fd, BpfElfObject.Parse(s_object), Section, btfPath);

        /// <summary>
        /// One io_uring_enter with GETEVENTS and nothing to submit, as the ring thread would make,
        /// repeated only when a signal interrupts the loop's wait (EINTR; the runtime signals
        /// threads to suspend them for GC).
        /// </summary>
        public void EnterOnce()
        {
            int result;
            do
            {
                result = IoUringSyscalls.Enter(Ring.Fd, 0, 0, IoUringConstants.Enter.GetEvents, null, 0);
            }
            while (result == -Errno.EINTR);

            Assert.Equal(0, result); // io_run_loop returns 0 when loop_step stops
        }

        public void Dispose()
        {
            Ring.Dispose(); // frees the registered region before its memory
            NativeMemory.AlignedFree(_page);
        }
    }
}
