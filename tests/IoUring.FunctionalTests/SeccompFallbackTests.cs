using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Sockets;
using IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// io_uring blocked for real, the way a container runtime's seccomp profile blocks it: a child
/// process (<see cref="ChildProcess"/>) installs a seccomp filter that fails
/// io_uring_setup with EPERM, then starts a host. With FallbackToSockets it serves on Sockets and
/// warns once naming the reason; without, it fails at start with that reason.
/// </summary>
public partial class SeccompFallbackTests
{
    private const string ModeVariable = "IOURING_SECCOMP_CHILD_MODE";
    private const string OutputVariable = "IOURING_SECCOMP_CHILD_OUTPUT";

    [Fact]
    public async Task BlockedBySeccompFallsBackToSocketsWithOneWarningNamingTheReason()
    {
        Dictionary<string, string> result = await RunChildAsync("fallback");
        Assert.Equal("False", result["IsUsingIoUring"]);
        Assert.Equal("ok", result["Response"]);
        Assert.NotEqual("IoUringConnection", result["ConnectionType"]);
        Assert.Equal("1", result["Warnings"]);
        Assert.Contains("seccomp", result["Warning"], StringComparison.Ordinal);
        Assert.Contains("io_uring_setup was refused (EPERM)", result["Warning"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task BlockedBySeccompWithoutFallbackFailsAtStartWithTheReason()
    {
        Dictionary<string, string> result = await RunChildAsync("strict");
        Assert.Equal(nameof(IoUringUnavailableException), result["Exception"]);
        Assert.Equal(nameof(IoUringUnavailableReason.BlockedBySecurityPolicy), result["Reason"]);
        Assert.Contains("seccomp", result["Message"], StringComparison.Ordinal);
    }

    /// <summary>The child's entry (<see cref="ChildProcess"/>): blocks io_uring, starts a host, writes what it saw.</summary>
    private static async Task<int> SeccompChildAsync()
    {
        string mode = Environment.GetEnvironmentVariable(ModeVariable)!;
        string output = Environment.GetEnvironmentVariable(OutputVariable)!;
        var lines = new List<string>();
        BlockIoUringSetup();

        var logs = new CapturingLoggerProvider();
        string? connectionType = null;
        using IHost host = TestHost.Build(
            web => web
                .UseKestrel(k =>
                {
                    k.Listen(IPAddress.Loopback, 0, listen => listen.Use(next => connection =>
                    {
                        connectionType = connection.GetType().Name;
                        return next(connection);
                    }));
                    k.Listen(IPAddress.Loopback, 0); // two endpoints: still one warning
                })
                .UseIoUringTransport(o => o.FallbackToSockets = mode == "fallback")
                .Configure(app => app.Run(context => context.Response.WriteAsync("ok"))),
            logs,
            LogLevel.Debug);
        try
        {
            await host.StartAsync(CancellationToken.None);
            IoUringTransportFactory factory = host.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().Single();
            int port = new Uri(host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
            using var client = new HttpClient();
            lines.Add("Response=" + await client.GetStringAsync($"http://127.0.0.1:{port}/", CancellationToken.None));
            lines.Add("IsUsingIoUring=" + factory.IsUsingIoUring);
            lines.Add("ConnectionType=" + connectionType);
            var warnings = logs.Entries.Where(e => e.Level >= LogLevel.Warning).ToList();
            lines.Add("Warnings=" + warnings.Count);
            lines.AddRange(warnings.Select(w => "Warning=" + w.Message.ReplaceLineEndings(" ")));
            await host.StopAsync(CancellationToken.None);
        }
        catch (IoUringUnavailableException ex)
        {
            lines.Add("Exception=" + ex.GetType().Name);
            lines.Add("Reason=" + ex.Reason);
            lines.Add("Message=" + ex.Message.ReplaceLineEndings(" "));
        }

        await File.WriteAllLinesAsync(output, lines, CancellationToken.None);
        return 0;
    }

    private static async Task<Dictionary<string, string>> RunChildAsync(string mode)
    {
        if (SeccompAbi() is null)
        {
            Assert.Skip($"The test's seccomp filter knows seccomp(2)'s number and AUDIT_ARCH value on x86_64 and arm64 only, not {RuntimeInformation.ProcessArchitecture}.");
        }

        string output = Path.Combine(Path.GetTempPath(), $"iouring-seccomp-{Guid.NewGuid():N}.txt");
        try
        {
            (int exitCode, string log) = await ChildProcess.RunAsync(
                SeccompChildAsync,
                new Dictionary<string, string> { [ModeVariable] = mode, [OutputVariable] = output });
            Assert.True(exitCode == 0 && File.Exists(output), $"the child failed (exit {exitCode}):\n{log}");
            return File.ReadAllLines(output)
                .Select(line => line.Split('=', 2))
                .GroupBy(kv => kv[0])
                .ToDictionary(g => g.Key, g => g.First()[1]);
        }
        finally
        {
            File.Delete(output);
        }
    }

    /// <summary>
    /// Installs a seccomp filter on every thread of this process (SECCOMP_FILTER_FLAG_TSYNC) that
    /// fails io_uring_setup with EPERM, as Docker's default profile does, and allows everything
    /// else. seccomp(2); the classic BPF program reads struct seccomp_data (nr at offset 0, arch at 4).
    /// </summary>
    private static unsafe void BlockIoUringSetup()
    {
        const uint IoUringSetup = 425; // the same number on x86_64 and arm64 (the unified syscall table)
        (uint arch, long seccompSyscall) = SeccompAbi() ?? throw new PlatformNotSupportedException($"no seccomp test filter for {RuntimeInformation.ProcessArchitecture}");
        const uint RetErrnoEperm = 0x0005_0000 | 1, RetAllow = 0x7FFF_0000; // SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ALLOW
        SockFilter* program = stackalloc SockFilter[]
        {
            SockFilter.LoadWord(4),                       // A = arch
            SockFilter.JumpIfEqual(arch, 0, 3),           // other architectures: allow (3 ahead)
            SockFilter.LoadWord(0),                       // A = syscall number
            SockFilter.JumpIfEqual(IoUringSetup, 0, 1),   // io_uring_setup: next; else allow
            SockFilter.ReturnConstant(RetErrnoEperm),
            SockFilter.ReturnConstant(RetAllow),
        };
        var fprog = new SockFprog { Length = 6, Filter = program };
        Assert.Equal(0, Prctl(38 /* PR_SET_NO_NEW_PRIVS */, 1, 0, 0, 0));
        long result = Syscall(seccompSyscall, 1 /* SECCOMP_SET_MODE_FILTER */, 1 /* SECCOMP_FILTER_FLAG_TSYNC */, &fprog);
        Assert.True(result == 0, $"seccomp failed: {result}, errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>
    /// This architecture's AUDIT_ARCH_* value (what the filter compares seccomp_data.arch with,
    /// &lt;linux/audit.h&gt;) and seccomp(2)'s number (glibc has no wrapper); null on an architecture
    /// the test has no numbers for.
    /// </summary>
    private static (uint AuditArch, long SeccompSyscall)? SeccompAbi() => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => (0xC000003Eu, 317L),   // AUDIT_ARCH_X86_64, __NR_seccomp
        Architecture.Arm64 => (0xC00000B7u, 277L), // AUDIT_ARCH_AARCH64, __NR_seccomp
        _ => null,
    };

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    private static partial int Prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static unsafe partial long Syscall(long number, long operation, long flags, void* args);
}
