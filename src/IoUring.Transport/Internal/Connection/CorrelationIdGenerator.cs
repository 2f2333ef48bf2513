using System;
using System.Threading;

namespace IoUring.Transport.Internal;

/// <summary>
/// Connection ids in the shape Kestrel logs them: 13 base-32 characters of a counter seeded from
/// the clock, so ids from different runs rarely collide in aggregated logs.
/// </summary>
internal static class CorrelationIdGenerator
{
    private static readonly char[] s_alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUV".ToCharArray();
    private static long s_lastId = DateTime.UtcNow.Ticks;

    public static string GetNextId()
    {
        long id = Interlocked.Increment(ref s_lastId);
        return string.Create(13, id, static (span, value) =>
        {
            for (int i = span.Length - 1; i >= 0; i--)
            {
                span[i] = s_alphabet[(int)(value & 31)];
                value >>= 5;
            }
        });
    }
}
