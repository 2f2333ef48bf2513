using System.Runtime.InteropServices;

namespace IoUring.Sockets;

// The SO_LINGER option value (x86_64-linux-gnu/bits/socket.h):
//   struct linger { int l_onoff; int l_linger; };   8 bytes: offset 0 l_onoff, 4 l_linger (seconds).
[StructLayout(LayoutKind.Sequential)]
internal struct Linger
{
    public int OnOff;
    public int Seconds;
}
