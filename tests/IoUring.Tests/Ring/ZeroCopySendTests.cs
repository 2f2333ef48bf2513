using System;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using IoUring.Interop;
using Xunit;
using static IoUring.Tests.Ring.RingTestHelpers;

namespace IoUring.Tests.Ring;

/// <summary>SEND_ZC posts its result and, later, a notification when the memory is free again.</summary>
public unsafe class ZeroCopySendTests
{
    [Fact]
    public void SendZcPostsResultThenNotification()
    {
        using var ring = IoUring.Ring.Create();
        RequireFeature(ring.Probe().IsSupported(IoUringConstants.Op.SendZc), "IORING_OP_SEND_ZC", new Version(6, 0));
        (Socket server, Socket client) = TcpPair();
        using (server)
        using (client)
        {
            // Socket buffers larger than the payload: the send completes without waiting for the reader.
            server.SendBufferSize = 1 << 20;
            client.ReceiveBufferSize = 1 << 20;
            const int Size = 64 * 1024;
            byte[] payload = Pattern(Size, 8);
            byte* native = (byte*)NativeMemory.Alloc(Size);
            try
            {
                payload.CopyTo(new Span<byte>(native, Size));
                Sqe* sqe = ring.GetSqe();
                sqe->PrepSendZc((int)server.SafeHandle.DangerousGetHandle(), native, Size, 0, IoUringConstants.RecvSend.SendZcReportUsage);
                sqe->UserData = 11;
                ring.Submit();

                Cqe result = WaitCqe(ring);
                Assert.Equal(11UL, result.UserData);
                Assert.False(result.IsNotification, "the result comes first");
                Assert.True(result.HasMore, "the result CQE of SEND_ZC announces a notification");
                Assert.Equal(Size, result.Res);

                Cqe notification = WaitCqe(ring);
                Assert.Equal(11UL, notification.UserData);
                Assert.True(notification.IsNotification);
                Assert.False(notification.HasMore);
                // Over loopback the kernel copies; with REPORT_USAGE the notification says so.
                Assert.Equal(IoUringConstants.NotifUsageZcCopied, (uint)notification.Res & IoUringConstants.NotifUsageZcCopied);

                var received = new byte[Size];
                int got = 0;
                while (got < Size)
                {
                    got += client.Receive(received, got, Size - got, SocketFlags.None);
                }

                Assert.Equal(payload, received);
            }
            finally
            {
                NativeMemory.Free(native);
            }
        }
    }
}
