using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport.Internal;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>
/// The process runs out of descriptors while clients keep connecting: accept fails with EMFILE,
/// the listener backs off (no CPU spin) and accepts the waiting connections once descriptors free up.
/// </summary>
/// <remarks>Alone in its collection: while it holds every descriptor, nothing else in the process can open one.</remarks>
[Collection(nameof(DescriptorExhaustionTests))]
public class DescriptorExhaustionTests
{
    [Fact]
    public async Task AcceptBacksOffWithoutSpinningAndResumesWhenDescriptorsFree()
    {
        Assert.Equal(0, NativeMethods.GetRLimit(NativeMethods.RlimitNofile, out NativeMethods.RLimit original));
        int highest = Directory.GetFiles("/proc/self/fd").Select(f => int.Parse(Path.GetFileName(f), System.Globalization.CultureInfo.InvariantCulture)).Max();
        // io_uring's accept reads RLIMIT_NOFILE when the accept is armed, so lower it before the
        // server starts; 300 descriptors of headroom cover the server's rings and sockets.
        var lowered = new NativeMethods.RLimit { Current = (ulong)highest + 300, Maximum = original.Maximum };
        Assert.Equal(0, NativeMethods.SetRLimit(NativeMethods.RlimitNofile, in lowered));
        var fillers = new List<int>();
        try
        {
            var logs = new CapturingLoggerProvider();
            var longBackoff = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var firstBackoff = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            logs.Logged += entry =>
            {
                if (entry.EventId.Name == "AcceptBackoff")
                {
                    firstBackoff.TrySetResult();
                    if (entry.Message.Contains("retrying in 512 ms", StringComparison.Ordinal))
                    {
                        longBackoff.TrySetResult();
                    }
                }
            };
            await using IoUringServer server = await IoUringServer.StartAsync(o => o.RingCount = 1, ConnectionMiddlewareTests.Echo, logs: logs);
            Assert.True(await FaultTests.EchoExchangeAsync(server.Port, 1000, 1), "the server does not serve before the fault");

            // Everything that needs a descriptor first: the clients' sockets, and the runtime's timer
            // thread (starting a thread opens /proc files), which the waits below use.
            await Task.Delay(1, TestContext.Current.CancellationToken);
            var clients = Enumerable.Range(0, 4).Select(_ => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)).ToArray();
            // And spare thread-pool threads: a thread that cannot start (starting one opens /proc
            // files) is fatal to the process, as the pool's MaybeAddWorkingWorker lets Thread.Start's
            // OutOfMemoryException escape (seen once in the 7.2 VM, where work items run slowly and
            // the pool adds workers). Workers it has already, idle, are used instead of new ones.
            await StartSpareWorkersAsync(8);
            List<int> threads = ThreadsButJit();
            using SafeFileHandle devNull = File.OpenHandle("/dev/null");
            int template = (int)devNull.DangerousGetHandle();
            while (true)
            {
                int fd = NativeMethods.Dup(template);
                if (fd < 0)
                {
                    Assert.Equal(24, System.Runtime.InteropServices.Marshal.GetLastPInvokeError()); // EMFILE
                    break;
                }

                fillers.Add(fd);
            }

            RingThread ring = Assert.Single(server.Group.Rings);
            long entersBefore = ring.Enters;
            TimeSpan cpuBefore = CpuTime(threads);
            var wall = Stopwatch.StartNew();
            var exchanges = new Task<bool>[clients.Length];
            for (int i = 0; i < clients.Length; i++)
            {
                exchanges[i] = ExchangeAsync(clients[i], server.Port, 50_000 + i);
            }

            // Backoff doubles from 1 ms: the 512 ms retry comes after nine failed ones, about half a
            // second of exhaustion. A listener retrying at once would burn a core for all of it.
            await firstBackoff.Task.DefaultTimeout();
            await longBackoff.Task.DefaultTimeout();
            TimeSpan cpu = CpuTime(threads) - cpuBefore;
            TimeSpan elapsed = wall.Elapsed;
            long enters = ring.Enters - entersBefore;
            Assert.False(exchanges.Any(e => e.IsCompleted), "a connection was served while no descriptor was free");

            foreach (int fd in fillers)
            {
                NativeMethods.Close(fd);
            }

            fillers.Clear();
            TestContext.Current.SendDiagnosticMessage($"without descriptors: {cpu.TotalMilliseconds:F0} ms CPU in {elapsed.TotalMilliseconds:F0} ms, {enters} io_uring_enter calls");
            // A count first, which holds under any clock: ten retries cost a few enters each; an
            // accept retried at once would enter the kernel thousands of times in half a second.
            Assert.True(enters < 500, $"the ring entered the kernel {enters} times in {elapsed.TotalMilliseconds:F0} ms without descriptors: accept spins");
            // Then the CPU time, except in a kernel under software emulation (scripts/kernel-vm.sh
            // sets KERNEL_VM), where the runtime's own work costs 25 to 80 times more (measured)
            // and no ratio of CPU to wall time says anything about spinning.
            if (Environment.GetEnvironmentVariable("KERNEL_VM") is null)
            {
                Assert.True(cpu < elapsed / 2, $"the process used {cpu.TotalMilliseconds:F0} ms of CPU in {elapsed.TotalMilliseconds:F0} ms without descriptors: accept spins");
            }
            Assert.All(await Task.WhenAll(exchanges).DefaultTimeout(), Assert.True);
            Assert.True(await FaultTests.EchoExchangeAsync(server.Port, 1000, 2), "the server does not serve after the fault");
            Assert.All(logs.Entries.Where(e => e.EventId.Name == "AcceptBackoff"), e =>
            {
                Assert.Equal(LogLevel.Warning, e.Level);
                Assert.Contains("errno 24", e.Message, StringComparison.Ordinal); // EMFILE, nothing else
            });
        }
        finally
        {
            foreach (int fd in fillers)
            {
                NativeMethods.Close(fd);
            }

            NativeMethods.SetRLimit(NativeMethods.RlimitNofile, in original);
        }

        // Makes the pool start `count` more workers now: as many work items that wait until all of
        // them run, with the pool's minimum raised so it starts them at once rather than one per
        // half second. The workers then wait idle for work; the minimum is put back.
        static async Task StartSpareWorkersAsync(int count)
        {
            ThreadPool.GetMinThreads(out int workers, out int io);
            ThreadPool.SetMinThreads(ThreadPool.ThreadCount + count, io);
            try
            {
                using var running = new CountdownEvent(count);
                Task[] holders = Enumerable.Range(0, count).Select(_ => Task.Run(() =>
                {
                    running.Signal();
                    running.Wait(TestContext.Current.CancellationToken);
                })).ToArray();
                await Task.WhenAll(holders).DefaultTimeout();
            }
            finally
            {
                ThreadPool.SetMinThreads(workers, io);
            }
        }

        // The CPU time of every thread but the runtime's tiered JIT compiler, which recompiles the
        // previous tests' hot methods in the background and has nothing to do with accepting. Read
        // through per-thread CPU clocks: a system call, no descriptor needed.
        static TimeSpan CpuTime(List<int> threads) => TimeSpan.FromTicks(threads.Sum(t => NativeMethods.ThreadCpuTime(t).Ticks));

        static List<int> ThreadsButJit()
        {
            var threads = new List<int>();
            foreach (string task in Directory.GetDirectories("/proc/self/task"))
            {
                try
                {
                    if (!File.ReadAllText(task + "/comm").StartsWith(".NET Tiered", StringComparison.Ordinal))
                    {
                        threads.Add(int.Parse(Path.GetFileName(task), System.Globalization.CultureInfo.InvariantCulture));
                    }
                }
                catch (IOException)
                {
                    // the thread ended while we looked
                }
            }

            return threads;
        }

        // The socket was made before the descriptors ran out; it connects now.
        static async Task<bool> ExchangeAsync(Socket socket, int port, int size)
        {
            using var connection = new RawConnection(socket);
            await socket.ConnectAsync(IPAddress.Loopback, port);
            var payload = new byte[size];
            new Random(size).NextBytes(payload);
            return (await connection.EchoAsync(payload)).AsSpan().SequenceEqual(payload);
        }
    }
}

[CollectionDefinition(nameof(DescriptorExhaustionTests), DisableParallelization = true)]
public sealed class DescriptorExhaustionTestsCollection
{
}
