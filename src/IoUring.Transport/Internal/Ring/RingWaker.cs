using System;
using System.Runtime.InteropServices;
using System.Threading;
using IoUring.Interop;
using Microsoft.Win32.SafeHandles;

namespace IoUring.Transport.Internal;

/// <summary>
/// How other threads wake a ring thread that sleeps in io_uring_enter: a read of an eventfd kept
/// pending in the ring, whose completion ends the sleep, and a flag the ring thread raises before
/// it sleeps, so that posters write the eventfd only when someone sleeps (a write is a system call
/// and a wake-up; most posts find the ring awake and skip it).
/// </summary>
/// <remarks>
/// The handshake is Dekker's: the ring thread raises the flag with a full fence, then looks at its
/// queues once more before sleeping; a poster enqueues (a full fence), then reads the flag. Either
/// the ring thread sees the work, or the poster sees the flag and writes. Only the poster that wins
/// the exchange of the flag back to 0 writes, so a burst of posts costs one write.
/// </remarks>
internal sealed unsafe class RingWaker : IDisposable
{
    private readonly int _fd;
    private readonly SafeFileHandle _handle; // owns _fd; Wake takes a reference, so the number is never written after close
    private ulong* _value;                   // native: the pending read's destination, written by the kernel at any time
    private int _needsWake;                  // 1 while the ring thread is about to sleep or sleeping; set by it, cleared by either side

    private RingWaker(int fd)
    {
        _fd = fd;
        _handle = new SafeFileHandle(fd, ownsHandle: true);
        _value = (ulong*)NativeMemory.Alloc(sizeof(ulong));
    }

    public static RingWaker Create()
    {
        // Blocking on purpose: io_uring honours O_NONBLOCK on reads and would complete the pending
        // read with -EAGAIN instead of parking it until a write.
        int fd = Libc.EventFd(0, Libc.EfdCloexec);
        if (fd < 0)
        {
            throw new IoUringException("eventfd", Libc.LastErrno);
        }

        return new RingWaker(fd);
    }

    /// <summary>Prepares the pending read in <paramref name="sqe"/>; again after each of its completions (ring thread).</summary>
    public void PrepareRead(Sqe* sqe) => sqe->PrepRead(_fd, _value, sizeof(ulong), ulong.MaxValue);

    /// <summary>The ring thread is about to sleep: from here on posters must write (full fence).</summary>
    public void AnnounceSleep() => Interlocked.Exchange(ref _needsWake, 1);

    /// <summary>The ring thread is awake again, or did not sleep after all (full fence).</summary>
    public void EndSleep() => Interlocked.Exchange(ref _needsWake, 0);

    /// <summary>Wakes the ring thread if it announced a sleep. Any thread, after publishing its work.</summary>
    public void Wake()
    {
        if (Volatile.Read(ref _needsWake) != 0 && Interlocked.Exchange(ref _needsWake, 0) != 0)
        {
            // The reference keeps the descriptor open while we write: a ring that just ended has
            // closed its eventfd, and the same number may already name another file.
            bool added = false;
            try
            {
                _handle.DangerousAddRef(ref added);
                ulong one = 1;
                _ = Libc.Write(_fd, &one, sizeof(ulong));
            }
            catch (ObjectDisposedException)
            {
                // The ring is gone; nobody is left to wake.
            }
            finally
            {
                if (added)
                {
                    _handle.DangerousRelease();
                }
            }
        }
    }

    /// <summary>Closes the eventfd (ring thread, after the ring itself is closed: no read is pending any more).</summary>
    public void Dispose()
    {
        // A poster that won the wake exchange holds a reference; the close waits for it.
        Volatile.Write(ref _needsWake, 0);
        _handle.Dispose();
        if (_value != null)
        {
            NativeMemory.Free(_value);
            _value = null;
        }
    }
}
