using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;

namespace IoUring.Bpf;

/// <summary>
/// Whether this process may load and attach an sk_reuseport program: BPF_PROG_LOAD of that type
/// needs CAP_BPF (or CAP_SYS_ADMIN, which implies it; kernel/bpf/syscall.c, bpf_capable) and
/// CAP_NET_ADMIN (capabilities(7); bpf_net_capable since Linux 5.8).
/// </summary>
internal static class BpfPrivileges
{
    private const int CapNetAdmin = 12; // linux/capability.h
    private const int CapSysAdmin = 21;
    private const int CapPerfmon = 38;
    private const int CapBpf = 39;

    /// <summary>The capabilities missing from this process's effective set, named; null when none is.</summary>
    public static string? MissingForReuseportPrograms()
    {
        ulong effective = EffectiveCapabilities();
        bool Has(int cap) => (effective & (1UL << cap)) != 0;
        var missing = new List<string>();
        if (!Has(CapBpf) && !Has(CapSysAdmin))
        {
            missing.Add("CAP_BPF");
        }

        if (!Has(CapNetAdmin))
        {
            missing.Add("CAP_NET_ADMIN");
        }

        return missing.Count == 0 ? null : string.Join(" and ", missing);
    }

    /// <summary>
    /// The capabilities missing for a struct_ops program such as an io_uring BPF loop: CAP_BPF
    /// (struct_ops maps, kfunc calls) and CAP_PERFMON (BPF_PROG_TYPE_STRUCT_OPS is one of the
    /// tracing-like types bpf_prog_load asks it for, kernel/bpf/syscall.c is_perfmon_prog_type);
    /// CAP_SYS_ADMIN implies both. Null when none is missing.
    /// </summary>
    public static string? MissingForStructOps()
    {
        ulong effective = EffectiveCapabilities();
        bool Has(int cap) => (effective & (1UL << cap)) != 0;
        if (Has(CapSysAdmin))
        {
            return null;
        }

        var missing = new List<string>();
        if (!Has(CapBpf))
        {
            missing.Add("CAP_BPF");
        }

        if (!Has(CapPerfmon))
        {
            missing.Add("CAP_PERFMON");
        }

        return missing.Count == 0 ? null : string.Join(" and ", missing);
    }

    /// <summary>The CapEff line of /proc/self/status (proc(5)): the effective set as a hex mask.</summary>
    private static ulong EffectiveCapabilities()
    {
        string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("CapEff:", StringComparison.Ordinal));
        return line is null ? 0 : ulong.Parse(line.AsSpan("CapEff:".Length).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }
}
