using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Reflection;
using System.Threading.Tasks;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// Runs a static method of this test assembly in a child process, for what must not happen to the
/// test runner's own process (a seccomp filter, say): the same executable, started with
/// <see cref="EntryVariable"/> naming the method and this assembly as its startup hook
/// (DOTNET_STARTUP_HOOKS), which runs the method before the test framework's Main and exits with
/// its result. (A module initializer cannot: it holds the module's type-initialization lock, so
/// any thread-pool continuation into this assembly would wait for it forever.)
/// </summary>
internal static class ChildProcess
{
    private const string EntryVariable = "IOURING_TEST_CHILD_ENTRY";

    /// <summary>
    /// Starts the child, which runs <paramref name="entry"/> (a static method of this assembly),
    /// with <paramref name="environment"/> added to this process's; waits for it to exit.
    /// </summary>
    public static async Task<(int ExitCode, string Output)> RunAsync(Func<Task<int>> entry, IReadOnlyDictionary<string, string> environment)
    {
        MethodInfo method = entry.Method;
        Assert.True(method.IsStatic, "a child's entry must be a static method");
        // This test executable itself (xunit v3 builds an apphost).
        var start = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, Path.GetFileNameWithoutExtension(typeof(ChildProcess).Assembly.Location)))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment[EntryVariable] = $"{method.DeclaringType!.FullName}:{method.Name}";
        start.Environment["DOTNET_STARTUP_HOOKS"] = typeof(ChildProcess).Assembly.Location;
        foreach ((string name, string value) in environment)
        {
            start.Environment[name] = value;
        }

        using Process child = Process.Start(start)!;
        Task<string> stdout = child.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        Task<string> stderr = child.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        await child.WaitForExitAsync(TestContext.Current.CancellationToken).DefaultTimeout(times: 4);
        return (child.ExitCode, await stdout + await stderr);
    }

    /// <summary>In a child, runs its entry and exits; in any other process, does nothing.</summary>
    internal static void RunIfChild()
    {
        string? entry = Environment.GetEnvironmentVariable(EntryVariable);
        if (entry is null)
        {
            return;
        }

        int exitCode;
        try
        {
            string[] parts = entry.Split(':');
            MethodInfo method = typeof(ChildProcess).Assembly.GetType(parts[0], throwOnError: true)!
                .GetMethod(parts[1], BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic)!;
            exitCode = ((Task<int>)method.Invoke(null, null)!).GetAwaiter().GetResult();
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"The child entry {entry} failed: {ex}");
            exitCode = 99;
        }

        Environment.Exit(exitCode);
    }
}
