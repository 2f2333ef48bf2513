using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Runtime.InteropServices;
using System.Text.Json;
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
/// warns once naming the reason; without, it fails at start with that reason. And given back the
/// way docs/containers.md says: a runtime's default profile with deploy/seccomp/io_uring.json's rule
/// merged in by deploy/seccomp/allow-io-uring.sh, compiled into the child's filter, lets it run on io_uring.
/// </summary>
public partial class SeccompFallbackTests
{
    private const string ModeVariable = "IOURING_SECCOMP_CHILD_MODE";
    private const string OutputVariable = "IOURING_SECCOMP_CHILD_OUTPUT";
    private const string ProfileVariable = "IOURING_SECCOMP_CHILD_PROFILE";

    /// <summary>
    /// A runtime's default profile as Docker's is since 25.0 (moby/moby#46762): it names none of the
    /// io_uring calls, so its default action refuses them with EPERM. Its one rule stands for the rest of
    /// what the runtime allows; the child's filter allows every other call without reading the rules
    /// (<see cref="InstallProfileFilter"/>).
    /// </summary>
    private const string RuntimeDefaultProfile = """
        {
          "defaultAction": "SCMP_ACT_ERRNO",
          "defaultErrnoRet": 1,
          "syscalls": [
            { "names": ["accept4", "epoll_wait", "read", "write"], "action": "SCMP_ACT_ALLOW" }
          ]
        }
        """;

    /// <summary>The io_uring system calls: the same numbers on x86_64 and arm64 (the unified syscall table).</summary>
    private static readonly (string Name, uint Number)[] s_ioUringSyscalls =
    [
        ("io_uring_setup", 425),
        ("io_uring_enter", 426),
        ("io_uring_register", 427),
    ];

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

    [Fact]
    public async Task TheRuntimeDefaultProfileWithTheShippedRuleRunsOnIoUring()
    {
        string profile = await MergeShippedRuleAsync(RuntimeDefaultProfile);
        Dictionary<string, string> result = await RunChildAsync("fallback", profile);
        Assert.Equal("ok", result["Response"]);
        Assert.Equal("True", result["IsUsingIoUring"]);
        Assert.Equal("IoUringConnection", result["ConnectionType"]);
        Assert.Equal("0", result["Warnings"]);
    }

    /// <summary>The control of the test above through the same compiled filter: without the rule, the profile blocks io_uring.</summary>
    [Fact]
    public async Task TheRuntimeDefaultProfileAloneFallsBackToSockets()
    {
        Dictionary<string, string> result = await RunChildAsync("fallback", RuntimeDefaultProfile);
        Assert.Equal("ok", result["Response"]);
        Assert.Equal("False", result["IsUsingIoUring"]);
        Assert.Equal("1", result["Warnings"]);
        Assert.Contains("io_uring_setup was refused (EPERM)", result["Warning"], StringComparison.Ordinal);
    }

    /// <summary>
    /// A profile that allows io_uring_setup but not one of the other two calls: the ring is made,
    /// and the transport must still notice, fall back and name the call, not serve on rings that
    /// cannot be entered (every connection would hang) or fail the start.
    /// </summary>
    [Theory]
    [InlineData("io_uring_enter")]
    [InlineData("io_uring_register")]
    public async Task AProfileThatAllowsOnlySomeIoUringCallsFallsBackNamingTheRefusedOne(string refused)
    {
        string allowed = string.Join(", ", s_ioUringSyscalls.Where(s => s.Name != refused).Select(s => $"\"{s.Name}\""));
        string profile = $$"""{ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [{ "names": [{{allowed}}], "action": "SCMP_ACT_ALLOW" }] }""";

        Dictionary<string, string> result = await RunChildAsync("fallback", profile);

        Assert.Equal("ok", result["Response"]);
        Assert.Equal("False", result["IsUsingIoUring"]);
        Assert.Equal("1", result["Warnings"]);
        Assert.Contains($"{refused} was refused", result["Warning"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheProfileScriptAddsTheRuleOnceAndKeepsTheProfilesOwnRules()
    {
        string once = await MergeShippedRuleAsync(RuntimeDefaultProfile);
        Assert.Equal(once, await MergeShippedRuleAsync(once));
        using JsonDocument merged = JsonDocument.Parse(once);
        using JsonDocument original = JsonDocument.Parse(RuntimeDefaultProfile);
        JsonElement[] rules = [.. merged.RootElement.GetProperty("syscalls").EnumerateArray()];
        Assert.Equal(2, rules.Length);
        Assert.True(JsonElement.DeepEquals(original.RootElement.GetProperty("syscalls")[0], rules[0]), "the profile's own rule changed");
        Assert.Equal("SCMP_ACT_ERRNO", merged.RootElement.GetProperty("defaultAction").GetString());
    }

    [Theory]
    [InlineData("not json", "is not JSON")]
    [InlineData("[]", "is not a seccomp profile")]
    [InlineData("""{ "defaultAction": "SCMP_ACT_ERRNO" }""", "is not a seccomp profile")]
    [InlineData("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{ "names": ["io_uring_enter"], "action": "SCMP_ACT_KILL" }] }""", "an action other than SCMP_ACT_ALLOW for io_uring_enter")]
    public async Task TheProfileScriptRefusesWhatItCannotMergeNamingWhy(string profile, string reason)
    {
        (int exitCode, string output, string errors) = await RunProfileScriptAsync(profile);
        Assert.NotEqual(0, exitCode);
        Assert.Equal("", output);
        Assert.StartsWith("allow-io-uring: ", errors, StringComparison.Ordinal);
        Assert.Contains(reason, errors, StringComparison.Ordinal);
    }

    /// <summary>The child's entry (<see cref="ChildProcess"/>): blocks io_uring (or applies a profile), starts a host, writes what it saw.</summary>
    private static async Task<int> SeccompChildAsync()
    {
        string mode = Environment.GetEnvironmentVariable(ModeVariable)!;
        string output = Environment.GetEnvironmentVariable(OutputVariable)!;
        string? profile = Environment.GetEnvironmentVariable(ProfileVariable);
        var lines = new List<string>();
        if (profile is null)
        {
            BlockIoUringSetup();
        }
        else
        {
            InstallProfileFilter(profile);
        }

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

    /// <summary>Runs the child; with <paramref name="profile"/> (a seccomp profile's JSON) its filter is that profile's.</summary>
    private static async Task<Dictionary<string, string>> RunChildAsync(string mode, string? profile = null)
    {
        if (SeccompAbi() is null)
        {
            Assert.Skip($"The test's seccomp filter knows seccomp(2)'s number and AUDIT_ARCH value on x86_64 and arm64 only, not {RuntimeInformation.ProcessArchitecture}.");
        }

        string output = Path.Combine(Path.GetTempPath(), $"iouring-seccomp-{Guid.NewGuid():N}.txt");
        string profilePath = Path.ChangeExtension(output, ".json");
        try
        {
            var environment = new Dictionary<string, string> { [ModeVariable] = mode, [OutputVariable] = output };
            if (profile is not null)
            {
                await File.WriteAllTextAsync(profilePath, profile, TestContext.Current.CancellationToken);
                environment[ProfileVariable] = profilePath;
            }

            (int exitCode, string log) = await ChildProcess.RunAsync(SeccompChildAsync, environment);
            Assert.True(exitCode == 0 && File.Exists(output), $"the child failed (exit {exitCode}):\n{log}");
            return File.ReadAllLines(output)
                .Select(line => line.Split('=', 2))
                .GroupBy(kv => kv[0])
                .ToDictionary(g => g.Key, g => g.First()[1]);
        }
        finally
        {
            File.Delete(output);
            File.Delete(profilePath);
        }
    }

    /// <summary><paramref name="profile"/> with the shipped rule merged in, by the shipped script.</summary>
    private static async Task<string> MergeShippedRuleAsync(string profile)
    {
        (int exitCode, string output, string errors) = await RunProfileScriptAsync(profile);
        Assert.True(exitCode == 0, $"allow-io-uring.sh exited with {exitCode}:\n{errors}");
        return output;
    }

    /// <summary>Runs deploy/seccomp/allow-io-uring.sh on <paramref name="profile"/> (written to a file, as a user passes it).</summary>
    private static async Task<(int ExitCode, string Output, string Errors)> RunProfileScriptAsync(string profile)
    {
        if (!(Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(dir => dir.Length > 0 && File.Exists(Path.Combine(dir, "jq"))))
        {
            Assert.Skip("jq is not installed (scripts/setup.sh installs it; CI runs this test).");
        }

        string input = Path.Combine(Path.GetTempPath(), $"iouring-seccomp-default-{Guid.NewGuid():N}.json");
        try
        {
            await File.WriteAllTextAsync(input, profile, TestContext.Current.CancellationToken);
            var start = new ProcessStartInfo("bash", [Path.Combine(Repository.Root(), "deploy", "seccomp", "allow-io-uring.sh"), input])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using Process script = Process.Start(start)!;
            Task<string> output = script.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
            Task<string> errors = script.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            await script.WaitForExitAsync(TestContext.Current.CancellationToken).DefaultTimeout();
            return (script.ExitCode, await output, await errors);
        }
        finally
        {
            File.Delete(input);
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
    /// Installs a seccomp filter (on every thread, as <see cref="BlockIoUringSetup"/> does) that
    /// answers io_uring_setup, io_uring_enter and io_uring_register as the profile at
    /// <paramref name="profilePath"/> does, looked up by their names there; every other call is
    /// allowed, standing for the rest of a runtime's default (not what this test is about).
    /// </summary>
    private static unsafe void InstallProfileFilter(string profilePath)
    {
        (uint arch, long seccompSyscall) = SeccompAbi() ?? throw new PlatformNotSupportedException($"no seccomp test filter for {RuntimeInformation.ProcessArchitecture}");
        using JsonDocument profile = JsonDocument.Parse(File.ReadAllText(profilePath));
        var program = new List<SockFilter>
        {
            SockFilter.LoadWord(4),                                                    // A = arch
            SockFilter.JumpIfEqual(arch, 0, (byte)(1 + 2 * s_ioUringSyscalls.Length)), // other architectures: allow (the last)
            SockFilter.LoadWord(0),                                                    // A = syscall number
        };
        foreach ((string name, uint number) in s_ioUringSyscalls)
        {
            program.Add(SockFilter.JumpIfEqual(number, 0, 1));                         // this call: next; else the next pair
            program.Add(SockFilter.ReturnConstant(ProfileAction(profile.RootElement, name)));
        }

        program.Add(SockFilter.ReturnConstant(0x7FFF_0000));                           // every other call: SECCOMP_RET_ALLOW
        fixed (SockFilter* filter = program.ToArray())
        {
            var fprog = new SockFprog { Length = (ushort)program.Count, Filter = filter };
            Assert.Equal(0, Prctl(38 /* PR_SET_NO_NEW_PRIVS */, 1, 0, 0, 0));
            long result = Syscall(seccompSyscall, 1 /* SECCOMP_SET_MODE_FILTER */, 1 /* SECCOMP_FILTER_FLAG_TSYNC */, &fprog);
            Assert.True(result == 0, $"seccomp failed: {result}, errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>
    /// The seccomp return value a profile gives the call <paramref name="name"/>, as runc reads it:
    /// the action of the rules naming it, or else the defaultAction. SCMP_ACT_ERRNO fails the call
    /// with that rule's errnoRet (the default action: defaultErrnoRet), EPERM without one (runc's
    /// getAction). Rules with conditions (args, includes, excludes) and other actions are not
    /// modelled: they fail the test.
    /// </summary>
    private static uint ProfileAction(JsonElement profile, string name)
    {
        var actions = new HashSet<(string Action, uint? Errno)>();
        foreach (JsonElement rule in profile.GetProperty("syscalls").EnumerateArray())
        {
            if (!rule.GetProperty("names").EnumerateArray().Any(n => n.GetString() == name))
            {
                continue;
            }

            foreach (string condition in new[] { "args", "includes", "excludes" })
            {
                if (rule.TryGetProperty(condition, out JsonElement value) && value.ValueKind switch
                {
                    JsonValueKind.Null => false,
                    JsonValueKind.Array => value.GetArrayLength() > 0,
                    JsonValueKind.Object => value.EnumerateObject().Any(),
                    _ => true,
                })
                {
                    throw new NotSupportedException($"the profile's rule for {name} has {condition}, which this test's filter does not model");
                }
            }

            actions.Add((rule.GetProperty("action").GetString()!, rule.TryGetProperty("errnoRet", out JsonElement errno) ? errno.GetUInt32() : null));
        }

        if (actions.Count > 1)
        {
            throw new NotSupportedException($"the profile has rules of different actions for {name}");
        }

        (string action, uint? errnoRet) = actions.Count == 1
            ? actions.Single()
            : (profile.GetProperty("defaultAction").GetString()!, profile.TryGetProperty("defaultErrnoRet", out JsonElement defaultErrno) ? defaultErrno.GetUInt32() : null);
        return action switch
        {
            "SCMP_ACT_ALLOW" => 0x7FFF_0000,                                 // SECCOMP_RET_ALLOW
            "SCMP_ACT_ERRNO" => 0x0005_0000 | ((errnoRet ?? 1) & 0xFFFF),    // SECCOMP_RET_ERRNO | errno (EPERM is 1)
            _ => throw new NotSupportedException($"the profile's action {action} for {name} is not modelled by this test's filter"),
        };
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
