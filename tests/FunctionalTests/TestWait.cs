using System;
using System.Globalization;
using System.Threading.Tasks;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// How long the functional tests wait, in one place: for an event that should come promptly
/// (<see cref="DefaultTimeout(Task)"/>), and for state that no event reports (<see cref="UntilAsync(Func{bool}, Func{string})"/>).
/// </summary>
public static class TestWait
{
    /// <summary>
    /// What a prompt event may take on a loaded machine before the test fails: 30 s, times
    /// TEST_TIMEOUT_SCALE when set (a kernel in software emulation runs several times slower).
    /// </summary>
    public static readonly TimeSpan Default = TimeSpan.FromSeconds(30 * Scale());

    /// <summary>Fails the test unless <paramref name="task"/> completes within <see cref="Default"/> (or the test is cancelled).</summary>
    public static Task DefaultTimeout(this Task task) => task.WaitAsync(Default, TestContext.Current.CancellationToken);

    /// <inheritdoc cref="DefaultTimeout(Task)"/>
    public static Task<T> DefaultTimeout<T>(this Task<T> task) => task.WaitAsync(Default, TestContext.Current.CancellationToken);

    /// <summary>
    /// As <see cref="DefaultTimeout(Task)"/>, for a long exchange (megabytes through a slow path,
    /// hundreds of clients): fails after <paramref name="times"/> times <see cref="Default"/>.
    /// </summary>
    public static Task DefaultTimeout(this Task task, int times) => task.WaitAsync(Default * times, TestContext.Current.CancellationToken);

    /// <inheritdoc cref="DefaultTimeout(Task, int)"/>
    public static Task<T> DefaultTimeout<T>(this Task<T> task, int times) => task.WaitAsync(Default * times, TestContext.Current.CancellationToken);

    /// <summary>
    /// Polls <paramref name="condition"/> every 10 ms until it holds, failing with
    /// <paramref name="failure"/> after <see cref="Default"/>: only for state that no event reports
    /// (a ring's thread ending, a count the kernel keeps, objects the kernel frees after a grace period).
    /// </summary>
    public static Task UntilAsync(Func<bool> condition, Func<string> failure) => UntilAsync(() => Task.FromResult(condition()), failure);

    /// <summary>As <see cref="UntilAsync(Func{bool}, Func{string})"/>, for a condition that has to ask asynchronously (a connection attempt, say).</summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, Func<string> failure)
    {
        DateTime deadline = DateTime.UtcNow + Default;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, failure());
            await Task.Delay(10, TestContext.Current.CancellationToken);
        }
    }

    /// <summary>TEST_TIMEOUT_SCALE (at least 1): how much slower than here the machine runs (4 under emulation).</summary>
    public static double Scale()
        => double.TryParse(Environment.GetEnvironmentVariable("TEST_TIMEOUT_SCALE"), NumberStyles.Float, CultureInfo.InvariantCulture, out double scale) && scale >= 1
            ? scale
            : 1;
}
