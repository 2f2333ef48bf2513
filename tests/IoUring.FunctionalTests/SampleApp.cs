using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Threading.Tasks;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// One of samples/* run as its own process, the way a user runs it (its build output in the
/// configuration these tests were built in, from its output folder so that its appsettings.json
/// applies), on an ephemeral loopback port, io_uring required. Started once it printed where it
/// listens; disposing kills it.
/// </summary>
internal sealed class SampleApp : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output;

    private SampleApp(Process process, StringBuilder output, Uri address, string transport)
    {
        _process = process;
        _output = output;
        Address = address;
        Transport = transport;
    }

    /// <summary>Where it listens, e.g. http://127.0.0.1:41234/.</summary>
    public Uri Address { get; }

    /// <summary>What it printed as its transport: "io_uring", or "Sockets (fallback)".</summary>
    public string Transport { get; }

    /// <summary>What it printed so far, for failure messages.</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>
    /// The path of samples/<paramref name="name"/>'s built entry assembly (named as its folder:
    /// "YarpProxy/Backend" is samples/YarpProxy/Backend/bin/…/Backend.dll).
    /// </summary>
    public static string PathOf(string name)
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        string configuration = directory.Parent!.Name; // bin/<configuration>/<framework>/
        string framework = directory.Name;
        string path = Path.Combine(Repository.Root(), "samples", name, "bin", configuration, framework, Path.GetFileName(name) + ".dll");
        Assert.True(File.Exists(path), $"{path} is missing: build the solution first");
        return path;
    }

    /// <param name="name">The sample's folder under samples/.</param>
    /// <param name="environment">More environment variables for it (configuration, as <c>Section__Key</c>).</param>
    public static async Task<SampleApp> StartAsync(string name, IReadOnlyDictionary<string, string>? environment = null)
    {
        string assembly = PathOf(name);
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(assembly)!, // the content root, where appsettings.json is
        };
        start.ArgumentList.Add(assembly);
        // On the command line, which overrides the Urls a sample's appsettings.json may set.
        start.ArgumentList.Add("--urls");
        start.ArgumentList.Add("http://127.0.0.1:0");
        start.Environment["DOTNET_ENVIRONMENT"] = "Production";
        start.Environment["IoUring__FallbackToSockets"] = "false";
        start.Environment["IoUring__KernelEventLoop"] = TransportSelector.KernelEventLoop.ToString();
        foreach ((string key, string value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        var output = new StringBuilder();
        var listening = new TaskCompletionSource<(Uri Address, string Transport)>(TaskCreationOptions.RunContinuationsAsynchronously);
        string? transport = null;
        Process process = Process.Start(start)!;
        void OnLine(string? line)
        {
            if (line is null)
            {
                listening.TrySetException(new InvalidOperationException("The sample ended its output before it listened."));
                return;
            }

            lock (output)
            {
                output.AppendLine(line);
            }

            if (line.StartsWith("Transport: ", StringComparison.Ordinal))
            {
                transport = line["Transport: ".Length..];
            }
            else if (line.StartsWith("Listening on: ", StringComparison.Ordinal))
            {
                listening.TrySetResult((new Uri(line["Listening on: ".Length..].Split(", ")[0]), transport ?? "?"));
            }
        }

        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (output)
                {
                    output.AppendLine(e.Data);
                }
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            (Uri address, string reported) = await listening.Task.DefaultTimeout();
            return new SampleApp(process, output, address, reported);
        }
        catch (Exception ex)
        {
            process.Kill(entireProcessTree: true);
            process.Dispose();
            throw new InvalidOperationException($"Sample {name} did not start: {ex.Message}\n{output}", ex);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        await _process.WaitForExitAsync().ConfigureAwait(false);
        _process.Dispose();
    }
}
