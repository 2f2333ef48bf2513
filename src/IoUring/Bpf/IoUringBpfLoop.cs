using System;
using System.Collections.Generic;

namespace IoUring.Bpf;

/// <summary>
/// Whether the kernel can run an io_uring event loop written in BPF: a struct_ops program of type
/// struct io_uring_bpf_ops that submits with the kfunc bpf_io_uring_submit_sqes and reaches the
/// ring's memory through bpf_io_uring_get_region (merged for Linux 7.1). The project ships no loop
/// program until it can be tested on such a kernel; this only reports whether one could run.
/// </summary>
internal static class IoUringBpfLoop
{
    public const string OpsType = "io_uring_bpf_ops";
    public const string SubmitKfunc = "bpf_io_uring_submit_sqes";
    public const string RegionKfunc = "bpf_io_uring_get_region";

    /// <summary>True when the kernel's BTF has the ops struct and both kfuncs; false otherwise, including when the kernel exposes no BTF.</summary>
    public static bool IsAvailable(string btfPath = BtfTypes.VmlinuxPath)
    {
        (int, string)[] wanted = [(BtfTypes.KindStruct, OpsType), (BtfTypes.KindFunc, SubmitKfunc), (BtfTypes.KindFunc, RegionKfunc)];
        try
        {
            HashSet<(int Kind, string Name)>? found = BtfTypes.Find(wanted, btfPath);
            return found is not null && found.Count == wanted.Length;
        }
        catch (FormatException)
        {
            // BTF this reader cannot walk (a kind newer than it): say no rather than fail the host.
            // The test that checks the answer against the kernel version catches it.
            return false;
        }
    }
}
