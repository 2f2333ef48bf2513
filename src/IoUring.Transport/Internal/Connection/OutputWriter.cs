using System;
using System.IO.Pipelines;
using System.Threading;
using System.Threading.Tasks;

namespace IoUring.Transport.Internal;

/// <summary>
/// <c>Transport.Output</c> on a ring whose kernel event loop holds send completions
/// (<see cref="RingThread.HoldsSendCompletions"/>): the output pipe's writer, which after each flush
/// and at completion tells the connection what it published, so that a send whose completion the
/// kernel may hold is released when the application writes more (IoUringConnection.Send.cs,
/// <see cref="IoUringConnection.OutputPublished"/>). Everything else goes straight to the pipe.
/// </summary>
/// <remarks>
/// Used by one writer at a time, as a <see cref="PipeWriter"/> is: <see cref="_written"/> needs no
/// synchronisation. A flush publishes in the pipe (under its lock) before it returns its task, so
/// the count is published after the bytes are visible to the send loop.
/// </remarks>
internal sealed class OutputWriter : PipeWriter
{
    private readonly PipeWriter _inner;
    private readonly IoUringConnection _connection;
    private long _written; // bytes advanced so far (the writer's own)

    public OutputWriter(PipeWriter inner, IoUringConnection connection)
    {
        _inner = inner;
        _connection = connection;
    }

    public override bool CanGetUnflushedBytes => _inner.CanGetUnflushedBytes;

    public override long UnflushedBytes => _inner.UnflushedBytes;

    public override void Advance(int bytes)
    {
        _inner.Advance(bytes);
        _written += bytes;
    }

    public override Memory<byte> GetMemory(int sizeHint = 0) => _inner.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => _inner.GetSpan(sizeHint);

    public override void CancelPendingFlush() => _inner.CancelPendingFlush();

    // Each publishes in a finally: a call that throws may still have committed (a count too high
    // only keeps the next send from being held).

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return _inner.FlushAsync(cancellationToken);
        }
        finally
        {
            _connection.OutputPublished(_written);
        }
    }

    public override ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
    {
        // The pipe's own WriteAsync copies and flushes without calling FlushAsync.
        try
        {
            return _inner.WriteAsync(source, cancellationToken);
        }
        finally
        {
            _written += source.Length;
            _connection.OutputPublished(_written);
        }
    }

    public override void Complete(Exception? exception = null)
    {
        try
        {
            _inner.Complete(exception);
        }
        finally
        {
            _connection.OutputPublished(long.MaxValue); // more than any byte count: the send loop must see the end
        }
    }
}
