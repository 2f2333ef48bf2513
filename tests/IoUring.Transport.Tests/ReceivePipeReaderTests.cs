using System;
using System.Buffers;
using System.Collections.Generic;
using System.IO;
using System.IO.Pipelines;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using IoUring.Transport.Internal;
using Xunit;

namespace IoUring.Transport.Tests;

/// <summary>The input PipeReader over provided buffers keeps PipeReader's contract and hands every buffer back.</summary>
public class ReceivePipeReaderTests
{
    private sealed class Owner : IReceiveBufferOwner
    {
        public List<int> Returned { get; } = [];

        public int Resumes { get; private set; }

        public bool InputCompleted { get; private set; }

        public void ReturnReceiveBuffers(List<int> bufferIds) => Returned.AddRange(bufferIds);

        public void ResumeReceiveIfPaused() => Resumes++;

        public void InputCompletedByApplication() => InputCompleted = true;
    }

    private static ReadOnlyMemory<byte> Bytes(string s) => System.Text.Encoding.ASCII.GetBytes(s);

    private static string Text(ReadOnlySequence<byte> buffer) => System.Text.Encoding.ASCII.GetString(buffer.ToArray());

    [Fact]
    public async Task ReadReturnsAppendedSegmentsInOrderAndAdvanceReturnsTheirBuffers()
    {
        var owner = new Owner();
        var reader = new ReceivePipeReader(owner, long.MaxValue, inlineContinuations: true);
        Assert.True(reader.Append(Bytes("hello "), 1, null));
        Assert.True(reader.Append(Bytes("world"), 2, null));
        Assert.Equal(2, reader.HeldRingBuffers);

        ReadResult result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        Assert.Equal("hello world", Text(result.Buffer));
        reader.AdvanceTo(result.Buffer.GetPosition(3)); // inside the first segment: nothing to return
        Assert.Empty(owner.Returned);

        result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        Assert.Equal("lo world", Text(result.Buffer));
        reader.AdvanceTo(result.Buffer.GetPosition(3)); // past the first segment
        Assert.Equal([1], owner.Returned);
        Assert.Equal(1, reader.HeldRingBuffers);

        result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        Assert.Equal("world", Text(result.Buffer));
        reader.AdvanceTo(result.Buffer.End);
        Assert.Equal([1, 2], owner.Returned);
        Assert.Equal(0, reader.Length);
    }

    [Fact]
    public async Task ExaminingEverythingMakesTheNextReadWaitForNewData()
    {
        var reader = new ReceivePipeReader(new Owner(), long.MaxValue, inlineContinuations: false);
        reader.Append(Bytes("GET /"), 1, null);
        ReadResult result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        reader.AdvanceTo(result.Buffer.Start, result.Buffer.End); // need more: consumed nothing, examined all
        Assert.False(reader.TryRead(out _));

        ValueTask<ReadResult> pending = reader.ReadAsync(TestContext.Current.CancellationToken);
        Assert.False(pending.IsCompleted);
        reader.Append(Bytes(" HTTP/1.1"), 2, null);
        result = await pending;
        Assert.Equal("GET / HTTP/1.1", Text(result.Buffer));
    }

    [Fact]
    public async Task CancelPendingReadCompletesTheWaitingReadAsCanceled()
    {
        var reader = new ReceivePipeReader(new Owner(), long.MaxValue, inlineContinuations: false);
        ValueTask<ReadResult> pending = reader.ReadAsync(TestContext.Current.CancellationToken);
        reader.CancelPendingRead();
        ReadResult result = await pending;
        Assert.True(result.IsCanceled);
        reader.AdvanceTo(result.Buffer.End);

        reader.CancelPendingRead(); // with no read waiting, the next read is the canceled one
        Assert.True((await reader.ReadAsync(TestContext.Current.CancellationToken)).IsCanceled);
    }

    [Fact]
    public async Task TokenCancellationFailsTheWaitingRead()
    {
        var reader = new ReceivePipeReader(new Owner(), long.MaxValue, inlineContinuations: false);
        using var cts = new CancellationTokenSource();
        ValueTask<ReadResult> pending = reader.ReadAsync(cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await pending);
        reader.Append(Bytes("x"), 1, null);
        Assert.Equal("x", Text((await reader.ReadAsync(TestContext.Current.CancellationToken)).Buffer));
    }

    [Fact]
    public async Task EndOfStreamIsReportedAfterTheData()
    {
        var reader = new ReceivePipeReader(new Owner(), long.MaxValue, inlineContinuations: false);
        reader.Append(Bytes("last"), 4, null);
        reader.CompleteWriter(null);
        Assert.False(reader.Append(Bytes("late"), 5, null));
        ReadResult result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        Assert.True(result.IsCompleted);
        Assert.Equal("last", Text(result.Buffer));
    }

    [Fact]
    public async Task AWriterErrorIsThrownToTheReader()
    {
        var reader = new ReceivePipeReader(new Owner(), long.MaxValue, inlineContinuations: false);
        ValueTask<ReadResult> pending = reader.ReadAsync(TestContext.Current.CancellationToken);
        reader.CompleteWriter(new IOException("reset"));
        var ex = await Assert.ThrowsAsync<IOException>(async () => await pending);
        Assert.Equal("reset", ex.Message);
    }

    [Fact]
    public void CompletingTheReaderReturnsEveryBufferAndDisposesCopies()
    {
        var owner = new Owner();
        var reader = new ReceivePipeReader(owner, long.MaxValue, inlineContinuations: false);
        using var pool = new PinnedBlockMemoryPool();
        IMemoryOwner<byte> block = pool.Rent();
        reader.Append(Bytes("a"), 7, null);
        reader.Append(block.Memory[..10], -1, block);
        reader.Append(Bytes("b"), 9, null);
        Assert.Equal(1, pool.RentedBlocks);

        reader.Complete();
        Assert.Equal([7, 9], owner.Returned.OrderBy(i => i));
        Assert.Equal(0, pool.RentedBlocks);
        Assert.True(owner.InputCompleted);
        Assert.False(reader.Append(Bytes("c"), 10, null)); // the caller keeps buffers the reader refuses
        Assert.Throws<InvalidOperationException>(() => reader.TryRead(out _));
    }

    [Fact]
    public async Task ConsumingBelowTheResumeThresholdAsksToResume()
    {
        var owner = new Owner();
        var reader = new ReceivePipeReader(owner, resumeThreshold: 4, inlineContinuations: false);
        reader.Append(Bytes("0123456789"), 1, null);
        ReadResult result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        reader.AdvanceTo(result.Buffer.GetPosition(2));
        Assert.Equal(0, owner.Resumes); // 8 left, above 4
        result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        reader.AdvanceTo(result.Buffer.GetPosition(5));
        Assert.Equal(1, owner.Resumes); // 3 left
    }
    [Fact]
    public async Task AdvancingToACanceledEmptyReadsStartAfterDataArrivedConsumesNothing()
    {
        // Kestrel's minimum data rate timer cancels a read that found nothing; the ring appends
        // before Kestrel advances to the empty buffer's start (this threw InvalidCastException).
        var owner = new Owner();
        var reader = new ReceivePipeReader(owner, long.MaxValue, inlineContinuations: true);
        ValueTask<ReadResult> pending = reader.ReadAsync(TestContext.Current.CancellationToken);
        reader.CancelPendingRead();
        ReadResult canceled = await pending;
        Assert.True(canceled.IsCanceled);
        Assert.True(canceled.Buffer.IsEmpty);

        reader.Append(Bytes("GET / HTTP/1.1"), 1, null);
        reader.AdvanceTo(canceled.Buffer.Start);

        ValueTask<ReadResult> next = reader.ReadAsync(TestContext.Current.CancellationToken);
        Assert.True(next.IsCompleted, "the appended bytes are new: the read must not wait");
        Assert.Equal("GET / HTTP/1.1", Text((await next).Buffer));
        Assert.Empty(owner.Returned);
    }

    [Fact]
    public async Task AdvancingToAnEmptyReadsStartAndEndAfterDataArrivedExaminesNothing()
    {
        var reader = new ReceivePipeReader(new Owner(), long.MaxValue, inlineContinuations: true);
        reader.CancelPendingRead();
        ReadResult canceled = await reader.ReadAsync(TestContext.Current.CancellationToken);
        Assert.True(canceled.Buffer.IsEmpty);

        reader.Append(Bytes("abc"), 1, null);
        reader.AdvanceTo(canceled.Buffer.Start, canceled.Buffer.End);

        Assert.True(reader.TryRead(out ReadResult next));
        Assert.Equal("abc", Text(next.Buffer));
    }

    [Fact]
    public async Task MisuseIsRefusedWithInvalidOperationAsPipeRefusesIt()
    {
        var reader = new ReceivePipeReader(new Owner(), long.MaxValue, inlineContinuations: true);
        reader.Append(Bytes("0123456789"), 1, null);
        Assert.Throws<InvalidOperationException>(() => reader.AdvanceTo(default)); // no read to complete

        ReadResult result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        Assert.Throws<InvalidOperationException>(() => reader.TryRead(out _)); // the last read was not advanced
        Action readAgain = () => _ = reader.ReadAsync(TestContext.Current.CancellationToken).AsTask();
        Assert.Throws<InvalidOperationException>(readAgain); // synchronously, as Pipe when it has data
        Assert.Throws<InvalidOperationException>(() => reader.AdvanceTo(result.Buffer.GetPosition(6), result.Buffer.GetPosition(2)));
        Assert.Throws<InvalidOperationException>(() => reader.AdvanceTo(ReadOnlySequence<byte>.Empty.Start)); // not this reader's

        ReadOnlySequence<byte> first = result.Buffer;
        reader.AdvanceTo(first.GetPosition(4)); // the refusals changed nothing
        Assert.True(reader.TryRead(out result));
        Assert.Equal("456789", Text(result.Buffer));
        Assert.Throws<InvalidOperationException>(() => reader.AdvanceTo(first.GetPosition(2))); // already consumed
        reader.AdvanceTo(result.Buffer.End);
        Assert.Equal(0, reader.Length);
    }

    [Fact]
    public async Task AWriterErrorComesBeforeAPendingCancellation()
    {
        // As Pipe: a reset ends the input even if a read was cancelled meanwhile.
        var reader = new ReceivePipeReader(new Owner(), long.MaxValue, inlineContinuations: false);
        reader.Append(Bytes("data"), 1, null);
        ReadResult result = await reader.ReadAsync(TestContext.Current.CancellationToken);
        reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        reader.CompleteWriter(new IOException("reset"));
        reader.CancelPendingRead();
        await Assert.ThrowsAsync<IOException>(async () => await reader.ReadAsync(TestContext.Current.CancellationToken));
    }
}
