using System.Collections.Generic;

namespace IoUring.Transport.Internal;

/// <summary>What <see cref="ReceivePipeReader"/> tells its connection; called from the application's threads.</summary>
internal interface IReceiveBufferOwner
{
    /// <summary>The application advanced past these provided buffers; the list is reused once this returns, so copy the ids out.</summary>
    void ReturnReceiveBuffers(List<int> bufferIds);

    /// <summary>Unconsumed input fell to the resume threshold.</summary>
    void ResumeReceiveIfPaused();

    /// <summary>The application completed the reader.</summary>
    void InputCompletedByApplication();
}
