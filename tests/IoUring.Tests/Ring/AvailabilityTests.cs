using System.Globalization;
using System.IO;
using IoUring.Interop;
using Xunit;
using State = IoUring.IoUringAvailability.SystemState;

namespace IoUring.Tests.Ring;

/// <summary>The errno of a failed io_uring_setup maps to a reason an operator can act on.</summary>
public class AvailabilityTests
{
    [Fact]
    public void EnosysWithoutSeccompMeansTheKernelLacksIoUring()
    {
        var ex = IoUringAvailability.Classify(Errno.ENOSYS, new State(null, 0));
        Assert.Equal(IoUringUnavailableReason.NotSupportedByKernel, ex.Reason);
        Assert.Equal(Errno.ENOSYS, ex.Errno);
        Assert.Contains("6.1", ex.Message);
    }

    [Fact]
    public void EnosysUnderASeccompFilterPointsAtTheFilter()
    {
        var ex = IoUringAvailability.Classify(Errno.ENOSYS, new State(0, 2));
        Assert.Equal(IoUringUnavailableReason.BlockedBySecurityPolicy, ex.Reason);
        Assert.Contains("seccomp", ex.Message);
    }

    [Theory]
    [InlineData(2, "kernel.io_uring_disabled is 2")]
    [InlineData(1, "kernel.io_uring_group")]
    public void EpermWithTheSysctlSetNamesTheSysctl(int sysctl, string expected)
    {
        var ex = IoUringAvailability.Classify(Errno.EPERM, new State(sysctl, 0));
        Assert.Equal(IoUringUnavailableReason.DisabledBySysctl, ex.Reason);
        Assert.Contains(expected, ex.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(null)]
    public void EpermWithTheSysctlAllowingItMeansASecurityPolicy(int? sysctl)
    {
        var ex = IoUringAvailability.Classify(Errno.EPERM, new State(sysctl, 2));
        Assert.Equal(IoUringUnavailableReason.BlockedBySecurityPolicy, ex.Reason);
        Assert.Contains("seccomp", ex.Message);
    }

    [Theory]
    [InlineData(Errno.ENOMEM)]
    [InlineData(Errno.EMFILE)]
    [InlineData(Errno.ENFILE)]
    public void ResourceErrnosMeanInsufficientResources(int errno)
        => Assert.Equal(IoUringUnavailableReason.InsufficientResources, IoUringAvailability.Classify(errno, default).Reason);

    [Fact]
    public void EinvalMeansTheKernelIsTooOld()
        => Assert.Equal(IoUringUnavailableReason.MissingKernelFeature, IoUringAvailability.Classify(Errno.EINVAL, default).Reason);

    [Fact]
    public void MissingOperationsAreNamed()
    {
        var ex = IoUringAvailability.MissingOperations(["SEND_ZC", "RECV"]);
        Assert.Equal(IoUringUnavailableReason.MissingKernelFeature, ex.Reason);
        Assert.Contains("SEND_ZC, RECV", ex.Message);
    }

    [Fact]
    public void TheRealSystemStateReadsTheSysctl()
    {
        // The sysctl exists from Linux 6.6; its value is the machine's setting, not the kernel's,
        // so it must read as the kernel reports it. This process makes rings, so it is not 2 (off
        // for every process); 1 still lets root in (CAP_SYS_ADMIN).
        State state = State.Current;
        if (RingTestHelpers.Kernel >= new System.Version(6, 6))
        {
            Assert.NotNull(state.IoUringDisabled);
            Assert.Equal(File.ReadAllText("/proc/sys/kernel/io_uring_disabled").Trim(), state.IoUringDisabled.Value.ToString(CultureInfo.InvariantCulture));
            using var ring = IoUring.Ring.Create();
            Assert.NotEqual(2, state.IoUringDisabled);
        }

        Assert.NotNull(state.SeccompMode);
    }
}
