using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// Headless Chromium for one test, in a process group of its own, driven over the DevTools
/// protocol (https://chromedevtools.github.io/devtools-protocol/) on one WebSocket to the browser:
/// a command's answer is matched by its id, an event is awaited by its name and session.
/// Disposing closes the browser and then kills whatever is left of its process group.
/// </summary>
internal sealed class HeadlessChromium : IAsyncDisposable
{
    /// <summary>The Debian package of the browser (scripts/setup.sh installs it).</summary>
    public const string Package = "chromium-headless-shell";

    // What each package calls its executable: Debian's chromium-headless-shell and chromium,
    // Ubuntu's chromium-browser, Google's build.
    private static readonly string[] s_executables = ["chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"];

    private readonly Process _process;
    private readonly StringBuilder _output;
    private readonly string _profile;
    private readonly ClientWebSocket _socket;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly Task _receiving;
    // Commands sent and not yet answered, by id; and events awaited; both under _gate.
    private readonly Dictionary<int, TaskCompletionSource<JsonElement>> _pending = [];
    private readonly List<(string Method, string? SessionId, TaskCompletionSource<JsonElement> Fired)> _awaited = [];
    private readonly Lock _gate = new();
    // The last command id used.
    private int _lastId;
    // Why the connection to the browser ended, once it has; under _gate.
    private Exception? _ended;

    private HeadlessChromium(Process process, StringBuilder output, string profile, ClientWebSocket socket)
    {
        _process = process;
        _output = output;
        _profile = profile;
        _socket = socket;
        _receiving = Task.Run(ReceiveAsync);
    }

    /// <summary>What the browser printed so far (its stderr and stdout), for failure messages.</summary>
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

    /// <summary>The browser's executable found on PATH, or null when none is installed.</summary>
    public static string? Find()
    {
        string[] directories = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries);
        return s_executables.SelectMany(name => directories.Select(directory => Path.Combine(directory, name))).FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// Starts <paramref name="executable"/> headless with a fresh profile and connects to it once
    /// it printed where its DevTools endpoint listens.
    /// </summary>
    public static async Task<HeadlessChromium> StartAsync(string executable)
    {
        string profile = Directory.CreateTempSubdirectory("iouring-chromium-").FullName;
        // setsid(1) execs the browser as the leader of a new process group (same pid), so that
        // group can be killed as a whole: Debian's /usr/bin/chromium* are shell scripts that run
        // the browser as their child, and the browser forks a zygote, a GPU and renderer processes.
        var start = new ProcessStartInfo("setsid")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(executable);
        foreach (string argument in new[]
        {
            "--headless",
            // Chromium refuses to run as root with its sandbox, and the sandbox needs user
            // namespaces otherwise; the only page it loads is the sample's.
            "--no-sandbox",
            "--remote-debugging-port=0",
            $"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-extensions",
            "--disable-gpu",
            "about:blank",
        })
        {
            start.ArgumentList.Add(argument);
        }

        var output = new StringBuilder();
        // The line Chromium prints once its DevTools endpoint accepts connections (Puppeteer waits for it too).
        const string Listening = "DevTools listening on ";
        var endpoint = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        Process process = Process.Start(start)!;
        void OnLine(string? line, bool stderr)
        {
            if (line is null)
            {
                if (stderr)
                {
                    endpoint.TrySetException(new InvalidOperationException("Chromium ended its output before its DevTools endpoint listened."));
                }

                return;
            }

            lock (output)
            {
                output.AppendLine(line);
            }

            if (stderr && line.StartsWith(Listening, StringComparison.Ordinal))
            {
                endpoint.TrySetResult(new Uri(line[Listening.Length..]));
            }
        }

        process.ErrorDataReceived += (_, e) => OnLine(e.Data, stderr: true);
        process.OutputDataReceived += (_, e) => OnLine(e.Data, stderr: false);
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        var socket = new ClientWebSocket();
        try
        {
            Uri browser = await endpoint.Task.DefaultTimeout();
            await socket.ConnectAsync(browser, TestContext.Current.CancellationToken).DefaultTimeout();
        }
        catch (Exception ex)
        {
            socket.Dispose();
            KillGroup(process);
            await process.WaitForExitAsync().ConfigureAwait(false);
            process.Dispose();
            DeleteProfile(profile);
            throw new InvalidOperationException($"Chromium ({executable}) did not start: {ex.Message}\n{output}", ex);
        }

        return new HeadlessChromium(process, output, profile, socket);
    }

    /// <summary>Opens a new page (tab) and attaches to it; returns the session id its commands go to.</summary>
    public async Task<string> OpenPageAsync()
    {
        JsonElement created = await SendAsync("Target.createTarget", new JsonObject { ["url"] = "about:blank" });
        JsonElement attached = await SendAsync("Target.attachToTarget", new JsonObject
        {
            ["targetId"] = created.GetProperty("targetId").GetString(),
            ["flatten"] = true,
        });
        return attached.GetProperty("sessionId").GetString()!;
    }

    /// <summary>Navigates the page of <paramref name="session"/> to <paramref name="url"/> and waits for its load event.</summary>
    public async Task NavigateAsync(string session, Uri url)
    {
        await SendAsync("Page.enable", session: session);
        Task<JsonElement> loaded = EventAsync("Page.loadEventFired", session);
        JsonElement navigated = await SendAsync("Page.navigate", new JsonObject { ["url"] = url.ToString() }, session);
        if (navigated.TryGetProperty("errorText", out JsonElement error))
        {
            throw new InvalidOperationException($"Chromium could not load {url}: {error.GetString()}");
        }

        await Within(loaded, "Page.loadEventFired");
    }

    /// <summary>
    /// Evaluates <paramref name="expression"/> in the page of <paramref name="session"/>, waits
    /// for the promise it returns, and returns its value (as JSON); a JavaScript exception throws.
    /// </summary>
    public async Task<JsonElement> EvaluateAsync(string session, string expression)
    {
        JsonElement evaluated = await SendAsync("Runtime.evaluate", new JsonObject
        {
            ["expression"] = expression,
            ["awaitPromise"] = true,
            ["returnByValue"] = true,
        }, session);
        if (evaluated.TryGetProperty("exceptionDetails", out JsonElement exception))
        {
            throw new InvalidOperationException($"The page's script threw: {exception}");
        }

        return evaluated.GetProperty("result").GetProperty("value");
    }

    /// <summary>Sends one command (to the browser, or to a page's <paramref name="session"/>) and returns its result.</summary>
    public async Task<JsonElement> SendAsync(string method, JsonObject? parameters = null, string? session = null)
    {
        var answered = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        int id;
        lock (_gate)
        {
            if (_ended is not null)
            {
                throw new InvalidOperationException($"The connection to Chromium ended before {method}.", _ended);
            }

            id = ++_lastId;
            _pending.Add(id, answered);
        }

        var command = new JsonObject { ["id"] = id, ["method"] = method, ["params"] = parameters ?? new JsonObject() };
        if (session is not null)
        {
            command["sessionId"] = session;
        }

        await _sendLock.WaitAsync(TestContext.Current.CancellationToken);
        try
        {
            await _socket.SendAsync(Encoding.UTF8.GetBytes(command.ToJsonString()), WebSocketMessageType.Text, endOfMessage: true, TestContext.Current.CancellationToken);
        }
        finally
        {
            _sendLock.Release();
        }

        return await Within(answered.Task, method);
    }

    /// <summary>An event's parameters once it fires in <paramref name="session"/>; ask before sending the command that causes it.</summary>
    private Task<JsonElement> EventAsync(string method, string? session)
    {
        var fired = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (_ended is not null)
            {
                fired.SetException(_ended);
            }
            else
            {
                _awaited.Add((method, session, fired));
            }
        }

        return fired.Task;
    }

    private async Task<JsonElement> Within(Task<JsonElement> answer, string what)
    {
        try
        {
            return await answer.DefaultTimeout();
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"Chromium did not answer {what} within {TestWait.Default.TotalSeconds} s. Its output:\n{Output}", ex);
        }
    }

    private async Task ReceiveAsync()
    {
        var message = new MemoryStream();
        var buffer = new byte[64 * 1024];
        Exception ended;
        try
        {
            while (true)
            {
                ValueWebSocketReceiveResult received = await _socket.ReceiveAsync(buffer.AsMemory(), CancellationToken.None);
                if (received.MessageType == WebSocketMessageType.Close)
                {
                    ended = new InvalidOperationException("Chromium closed the DevTools connection.");
                    break;
                }

                message.Write(buffer, 0, received.Count);
                if (received.EndOfMessage)
                {
                    Dispatch(message.GetBuffer().AsMemory(0, (int)message.Length));
                    message.SetLength(0);
                }
            }
        }
        catch (Exception ex) when (ex is WebSocketException or ObjectDisposedException or OperationCanceledException)
        {
            ended = new InvalidOperationException($"The DevTools connection to Chromium failed: {ex.Message}", ex);
        }

        List<TaskCompletionSource<JsonElement>> waiting;
        lock (_gate)
        {
            _ended = ended;
            waiting = [.. _pending.Values, .. _awaited.Select(a => a.Fired)];
            _pending.Clear();
            _awaited.Clear();
        }

        foreach (TaskCompletionSource<JsonElement> waiter in waiting)
        {
            waiter.TrySetException(ended);
        }
    }

    /// <summary>One message from the browser: the answer to a command (it has an id), or an event.</summary>
    private void Dispatch(ReadOnlyMemory<byte> json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        if (root.TryGetProperty("id", out JsonElement id))
        {
            TaskCompletionSource<JsonElement>? answered;
            lock (_gate)
            {
                _pending.Remove(id.GetInt32(), out answered);
            }

            if (root.TryGetProperty("error", out JsonElement error))
            {
                answered?.TrySetException(new InvalidOperationException($"Chromium answered command {id} with an error: {error}"));
            }
            else
            {
                answered?.TrySetResult(root.GetProperty("result").Clone());
            }

            return;
        }

        string? method = root.GetProperty("method").GetString();
        string? session = root.TryGetProperty("sessionId", out JsonElement s) ? s.GetString() : null;
        var fired = new List<TaskCompletionSource<JsonElement>>();
        lock (_gate)
        {
            fired.AddRange(_awaited.Where(a => a.Method == method && a.SessionId == session).Select(a => a.Fired));
            _awaited.RemoveAll(a => a.Method == method && a.SessionId == session);
        }

        foreach (TaskCompletionSource<JsonElement> waiter in fired)
        {
            waiter.TrySetResult(root.TryGetProperty("params", out JsonElement p) ? p.Clone() : default);
        }
    }

    public async ValueTask DisposeAsync()
    {
        // Browser.close ends the browser and its children in order (it may drop the connection
        // before it answers); what is left of the process group after is killed.
        bool closing = false;
        try
        {
            await SendAsync("Browser.close").ConfigureAwait(false);
            closing = true;
        }
        catch (InvalidOperationException)
        {
            closing = true; // the connection ended first
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException or WebSocketException)
        {
        }

        if (closing)
        {
            try
            {
                await _process.WaitForExitAsync().WaitAsync(TestWait.Default).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
            }
        }

        KillGroup(_process);
        await _process.WaitForExitAsync().ConfigureAwait(false);
        _socket.Abort();
        await _receiving.ConfigureAwait(false);
        _socket.Dispose();
        _process.Dispose();
        _sendLock.Dispose();
        DeleteProfile(_profile);
    }

    /// <summary>SIGKILL to the browser's process group (its pid: setsid made it the leader), then to the tree below it, for anything that left the group.</summary>
    private static void KillGroup(Process process)
    {
        // ESRCH: the group is empty already.
        _ = NativeMethods.Kill(-process.Id, NativeMethods.SigKill);
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // It has exited.
        }
    }

    private static void DeleteProfile(string profile)
    {
        try
        {
            Directory.Delete(profile, recursive: true);
        }
        catch (IOException)
        {
            // A process of the killed group still wrote there as it died: a temporary directory left behind, not the test's failure.
        }
    }
}
