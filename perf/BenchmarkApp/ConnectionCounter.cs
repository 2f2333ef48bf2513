using System.Threading;

namespace BenchmarkApp;

/// <summary>
/// Connections accepted on the HTTP ports (a connection middleware counts each once, before TLS
/// and HTTP): perf/run.sh reads it at /stats around every measured run, so a scenario that opens a
/// connection per request shows how many the server really accepted, not what the load generator
/// believes it opened.
/// </summary>
internal static class ConnectionCounter
{
    private static long s_accepted;

    public static long Accepted => Volatile.Read(ref s_accepted);

    public static void OnAccepted() => Interlocked.Increment(ref s_accepted);
}
