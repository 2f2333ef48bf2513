using System;
using System.Runtime.InteropServices;
using IoUring.Interop;

namespace IoUring.Bpf;

/// <summary>
/// A descriptor of a BPF map or program. The kernel frees the object when its last reference goes:
/// this descriptor, a mapping of the map, a program that uses the map, or a reuseport group the
/// program is attached to.
/// </summary>
internal sealed class BpfFd : SafeHandle
{
    public BpfFd(int fd)
        : base(new IntPtr(-1), ownsHandle: true)
    {
        SetHandle(new IntPtr(fd));
    }

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The descriptor number, for bpf(2) attributes and setsockopt.</summary>
    public int Value => IsClosed ? throw new ObjectDisposedException(nameof(BpfFd)) : (int)handle.ToInt64();

    protected override bool ReleaseHandle() => Libc.Close((int)handle.ToInt64()) == 0;
}
