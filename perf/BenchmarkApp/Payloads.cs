using System.Linq;
using System.Text;

namespace BenchmarkApp;

/// <summary>Response bodies built once, so a request costs the transport and Kestrel, not the app.</summary>
internal static class Payloads
{
    public static readonly byte[] HelloWorld = Encoding.UTF8.GetBytes("Hello, World!");

    public static readonly byte[] SixtyFourKiB = Letters(64 * 1024);

    public static readonly byte[] OneMiB = Letters(1024 * 1024);

    private static byte[] Letters(int length) => Enumerable.Range(0, length).Select(i => (byte)('a' + (i % 26))).ToArray();
}
