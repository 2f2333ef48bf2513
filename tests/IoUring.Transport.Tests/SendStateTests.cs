using System.Buffers;
using System.IO.Pipelines;
using System.Threading.Tasks;
using IoUring.Transport.Internal;
using Xunit;

namespace IoUring.Transport.Tests;

/// <summary>
/// A sendmsg's state comes in two sizes: a send of more than SendState.LargeFrom bytes gets one
/// that takes 256 pool blocks, so a 1 MiB response goes to the kernel in one sendmsg, as Kestrel's
/// Sockets transport gives it the whole sequence; smaller ones get 64.
/// </summary>
public class SendStateTests
{
    [Theory]
    [InlineData(1024 * 1024, SendState.MaxIovecs)]       // a 1 MiB response of 4 KiB blocks: whole
    [InlineData(4 * 1024 * 1024, SendState.MaxIovecs)]   // more: the first 256 blocks, the rest in the next sendmsg
    [InlineData(256 * 1024, SendState.SmallIovecs)]      // exactly 64 blocks: a small state, whole
    [InlineData(8 * 1024, 2)]
    public async Task OneSendmsgTakesAsManyBlocksAsItsStateHolds(int bytes, int expectedSegments)
    {
        using var pool = new PinnedBlockMemoryPool();
        var pipe = new Pipe(new PipeOptions(pool, pauseWriterThreshold: 0, minimumSegmentSize: PinnedBlockMemoryPool.BlockSize));
        for (int written = 0; written < bytes; written += PinnedBlockMemoryPool.BlockSize)
        {
            pipe.Writer.GetSpan(PinnedBlockMemoryPool.BlockSize)[..PinnedBlockMemoryPool.BlockSize].Fill((byte)(written / PinnedBlockMemoryPool.BlockSize));
            pipe.Writer.Advance(PinnedBlockMemoryPool.BlockSize);
        }

        await pipe.Writer.FlushAsync(TestContext.Current.CancellationToken);
        ReadResult read = await pipe.Reader.ReadAsync(TestContext.Current.CancellationToken);
        ReadOnlySequence<byte> buffer = read.Buffer;
        Assert.Equal(bytes, buffer.Length);

        SendState state = SendState.Rent(buffer.Length);
        int count;
        int total;
        unsafe
        {
            count = SendGather.Fill(in buffer, state.Iovecs, state.Handles, state.Segments, out total);
        }

        try
        {
            Assert.Equal(expectedSegments, count);
            Assert.Equal((long)expectedSegments * PinnedBlockMemoryPool.BlockSize, total);
        }
        finally
        {
            for (int i = 0; i < count; i++)
            {
                state.Handles[i].Dispose();
                state.Segments[i] = default;
            }

            SendState.Return(state);
            pipe.Reader.AdvanceTo(buffer.End);
            pipe.Reader.Complete();
            pipe.Writer.Complete();
        }
    }

    [Fact]
    public void ReturnedStatesGoBackToTheirOwnSize()
    {
        SendState large = SendState.Rent(SendState.LargeFrom + 1);
        SendState small = SendState.Rent(SendState.LargeFrom);
        Assert.Equal(SendState.MaxIovecs, large.Handles.Length);
        Assert.Equal(SendState.SmallIovecs, small.Handles.Length);
        SendState.Return(large);
        SendState.Return(small);

        // Whatever other tests left in the pools, a rent never hands out the other size.
        var rented = new SendState[8];
        for (int i = 0; i < rented.Length; i += 2)
        {
            rented[i] = SendState.Rent(100);
            rented[i + 1] = SendState.Rent(2 * 1024 * 1024);
            Assert.Equal(SendState.SmallIovecs, rented[i].Handles.Length);
            Assert.Equal(SendState.MaxIovecs, rented[i + 1].Handles.Length);
        }

        foreach (SendState state in rented)
        {
            SendState.Return(state);
        }
    }
}
