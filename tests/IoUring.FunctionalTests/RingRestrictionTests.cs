using System;
using System.Linq;
using System.Net.Http;
using System.Threading.Tasks;
using IoUring.Transport;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// The rings' opcode allowlist (<see cref="IoUringTransportOptions.RestrictRingOperations"/>, on by
/// default): on a kernel with io_uring BPF filters (Linux 7.0+; the 7.2 leg of
/// scripts/test-kernels.sh) every ring registers it and still serves, zero-copy sends included; on
/// one without (the host's 6.18) the rings serve unrestricted and one Debug line says why. The
/// rest of the suite runs with it on, so every operation the transport uses is exercised under it.
/// </summary>
public class RingRestrictionTests
{
    private static readonly bool s_kernelHasFilters = Environment.OSVersion.Version >= new Version(7, 0);

    [Fact]
    public async Task ByDefaultEveryRingRunsOnlyTheTransportsOperationsAndServes()
    {
        var logs = new CapturingLoggerProvider();
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => o.RingCount = 2,
            app: context => context.Response.WriteAsync("restricted"),
            logs: logs,
            minimumLevel: LogLevel.Debug);
        using (HttpClient client = new() { BaseAddress = new Uri($"http://127.0.0.1:{server.Port}/") })
        {
            for (int i = 0; i < 10; i++)
            {
                Assert.Equal("restricted", await client.GetStringAsync("/", TestContext.Current.CancellationToken).DefaultTimeout());
            }
        }

        var unrestricted = logs.Entries.Where(e => e.EventId.Name == "RingOperationsUnrestricted").ToList();
        if (s_kernelHasFilters)
        {
            Assert.All(server.Group.Rings, r => Assert.True(r.OperationsRestricted, $"ring {r.Index}: {r.OperationRestrictionRefusal?.Message}"));
            Assert.Empty(unrestricted);
        }
        else
        {
            Assert.All(server.Group.Rings, r => Assert.False(r.OperationsRestricted));
            var line = Assert.Single(unrestricted);
            Assert.Equal(LogLevel.Debug, line.Level);
            Assert.Contains("2 of 2 rings", line.Message, StringComparison.Ordinal);
            Assert.Contains("IORING_REGISTER_BPF_FILTER", line.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task ZeroCopySendsRunUnderTheAllowlist()
    {
        // send_zc and sendmsg_zc are in the list: a large response goes out zero-copy, whole.
        string body = new('z', 256 * 1024);
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.RingCount = 1; o.ZeroCopySendThreshold = 1; },
            app: context => context.Response.WriteAsync(body));
        using (HttpClient client = new() { BaseAddress = new Uri($"http://127.0.0.1:{server.Port}/") })
        {
            Assert.Equal(body, await client.GetStringAsync("/", TestContext.Current.CancellationToken).DefaultTimeout());
        }

        Assert.Equal(s_kernelHasFilters, server.Group.Rings[0].OperationsRestricted);
        Assert.True(server.Group.Rings[0].ZeroCopySends > 0 || server.Group.Rings[0].ZeroCopySendThreshold == int.MaxValue, "no zero-copy send was issued");
    }

    [Fact]
    public async Task OffLeavesTheRingsUnrestrictedAndSaysNothing()
    {
        var logs = new CapturingLoggerProvider();
        await using IoUringServer server = await IoUringServer.StartAsync(
            o => { o.RingCount = 1; o.RestrictRingOperations = false; },
            app: context => context.Response.WriteAsync("open"),
            logs: logs,
            minimumLevel: LogLevel.Debug);
        using (HttpClient client = new() { BaseAddress = new Uri($"http://127.0.0.1:{server.Port}/") })
        {
            Assert.Equal("open", await client.GetStringAsync("/", TestContext.Current.CancellationToken).DefaultTimeout());
        }

        Assert.False(server.Group.Rings[0].OperationsRestricted);
        Assert.Null(server.Group.Rings[0].OperationRestrictionRefusal);
        Assert.DoesNotContain(logs.Entries, e => e.EventId.Name == "RingOperationsUnrestricted");
    }
}
