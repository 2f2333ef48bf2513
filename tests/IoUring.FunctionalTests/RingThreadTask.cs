using System;
using System.IO;

namespace IoUring.FunctionalTests;

/// <summary>The /proc/self/task directory of a ring's thread, found by its name ("io_uring ring N"; proc(5)).</summary>
internal static class RingThreadTask
{
    public static string Of(int ring)
    {
        string name = $"io_uring ring {ring}";
        name = name[..Math.Min(name.Length, 15)]; // the kernel keeps 15 characters of a thread's name
        foreach (string task in Directory.GetDirectories("/proc/self/task"))
        {
            string comm;
            try
            {
                comm = File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n');
            }
            catch (IOException)
            {
                continue; // the thread ended meanwhile
            }

            if (comm == name)
            {
                return task;
            }
        }

        throw new InvalidOperationException($"No thread named {name}.");
    }
}
