using System;
using System.Collections.Generic;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using IoUring.FunctionalTests;
using IoUring.Interop;
using IoUring.Sockets;
using IoUring.Transport.Internal;
using Xunit;

namespace IoUring.Transport.Tests;

/// <summary>
/// IncomingCpu dispatch without a server: which ring each CPU of the cpuset maps to, and the
/// classic BPF program that does it, attached to a real reuseport group of plain sockets.
/// (DispatchTests in IoUring.FunctionalTests runs it on a started transport.)
/// </summary>
public class IncomingCpuDispatchTests
{
    [Fact]
    public void IncomingCpuMapsACpusetWithGapsByRankNotByCpuNumber()
    {
        // cpuset 2,3,6,7 over 4 rings: cpu % 4 would give rings 2 and 3 two CPUs each and rings 0
        // and 1 none; by rank each ring gets one CPU.
        Assert.Equal(new Dictionary<int, int> { [2] = 0, [3] = 1, [6] = 2, [7] = 3 }, ConnectionDispatcher.RingOfCpu([2, 3, 6, 7], 4));
        Assert.Equal(new Dictionary<int, int> { [2] = 0, [3] = 1, [6] = 0, [7] = 1 }, ConnectionDispatcher.RingOfCpu([7, 2, 6, 3], 2));

        SockFilter[] program = ConnectionDispatcher.IncomingCpuProgram([2, 3, 6, 7], 4);
        Assert.Equal(1 + (2 * 4) + 1, program.Length);
        Assert.Equal(SockFilter.ReturnConstant(4), program[^1]); // a CPU outside the table: past the group, the kernel's hash

        // A cpuset too large for BPF_MAXINSNS falls back to cpu % rings.
        Assert.Equal(3, ConnectionDispatcher.IncomingCpuProgram(Enumerable.Range(0, 4096).ToList(), 4).Length);
    }

    [Fact]
    public void IncomingCpuProgramSendsAConnectionToTheRankOfItsCpuOnARealReuseportGroup()
    {
        List<int> cpus = CpuAffinity.GetCurrentThread();
        if (cpus.Count < 2)
        {
            Assert.Skip($"Needs two CPUs to tell them apart; this process may run on {cpus.Count}.");
        }

        // Pretend the cpuset holds only cpus[1] (a gap where cpus[0] is): it is rank 0, so its
        // connections go to listener 0, whatever its number modulo 2. cpus[0] is outside the table:
        // the program returns 2, past the group, and the kernel's hash picks.
        SockFilter[] program = ConnectionDispatcher.IncomingCpuProgram([cpus[1]], 2);
        using var first = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var second = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        Socket[] group = [first, second];
        foreach (Socket listener in group)
        {
            listener.SetRawSocketOption(1, 15, BitConverter.GetBytes(1)); // SOL_SOCKET, SO_REUSEPORT
        }

        first.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        second.Bind(first.LocalEndPoint!);
        first.Listen(); // group order is listen() order (socket(7), SO_REUSEPORT)
        second.Listen();
        LinuxSocket.AttachReuseportCbpf((int)first.Handle, program);

        int[] landed = PinnedThread.Run(cpus[1], () => Enumerable.Range(0, 20).Select(_ =>
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            client.Connect(first.LocalEndPoint!);
            var ready = new List<Socket>(group);
            Socket.Select(ready, null, null, (int)TestWait.Default.TotalMicroseconds);
            Assert.Single(ready);
            using Socket accepted = ready[0].Accept();
            return Array.IndexOf(group, ready[0]);
        }).ToArray());
        Assert.All(landed, listener => Assert.Equal(0, listener));
    }
}
