using System.Runtime.InteropServices;

namespace IoUring.Sockets;

// The program descriptor handed to setsockopt for classic BPF filters (linux/filter.h):
//   struct sock_fprog { unsigned short len; struct sock_filter *filter; };
//   16 bytes on x86_64: offset 0 len (u16), 2..7 padding, 8 filter pointer.
// Sequential layout reproduces the padding because the pointer field is 8-byte aligned.
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SockFprog
{
    public ushort Length;
    public SockFilter* Filter;
}
