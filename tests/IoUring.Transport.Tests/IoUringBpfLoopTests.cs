using System;
using System.Collections.Generic;
using IoUring.Bpf;
using Xunit;

namespace IoUring.Transport.Tests;

/// <summary>The transport's probe for the io_uring BPF loop (struct io_uring_bpf_ops and its kfuncs) against the running kernel's BTF.</summary>
public class IoUringBpfLoopTests
{
    [Fact]
    public void IoUringBpfLoopAvailabilityMatchesTheKernelVersion()
    {
        // struct io_uring_bpf_ops and its kfuncs were merged for Linux 7.1: older kernels must say
        // no, and 7.1 or later must say yes (a kernel built without them would fail here, which is
        // the point: the probe would otherwise go unverified).
        Version kernel = Environment.OSVersion.Version;
        bool expected = kernel >= new Version(7, 1);
        Assert.Equal(expected, IoUringTransportFactory.IsIoUringBpfLoopAvailable);

        // The probe reads real BTF: a struct every kernel with BTF has is found.
        HashSet<(int Kind, string Name)>? found = BtfTypes.Find([(BtfTypes.KindStruct, "sk_reuseport_md"), (BtfTypes.KindStruct, IoUringBpfLoop.OpsType)]);
        Assert.NotNull(found);
        Assert.Contains((BtfTypes.KindStruct, "sk_reuseport_md"), found);
        Assert.Equal(expected, found.Contains((BtfTypes.KindStruct, IoUringBpfLoop.OpsType)));
    }
}
