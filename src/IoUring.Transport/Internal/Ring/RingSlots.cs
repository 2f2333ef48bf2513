using System.Collections.Generic;
using System.Diagnostics;

namespace IoUring.Transport.Internal;

/// <summary>
/// A handler's place in its ring's slot table and the generation the slot had when it was handed
/// out: what the <c>user_data</c> of the handler's requests names (<see cref="UserData"/>).
/// </summary>
internal readonly record struct RingSlot(int Index, uint Generation)
{
    /// <summary>No slot (a handler that has none yet, or gave it back).</summary>
    public static RingSlot None => new(-1, 0);

    public bool IsAssigned => Index >= 0;

    /// <summary>The <c>user_data</c> of a request of <paramref name="kind"/> from this slot.</summary>
    public ulong Tag(OpKind kind) => UserData.Encode(kind, Index, Generation);
}

/// <summary>
/// The completion handlers of one ring by slot (ring thread only). Completions are routed by the
/// slot in their <c>user_data</c> and checked against the slot's generation, never by descriptor:
/// descriptors are reused as soon as they are closed, and a late completion of a slot's previous
/// owner must never reach the next one. A slot is given back only once none of its requests can
/// still complete (the owner's rule; see docs/design.md, "Slots").
/// </summary>
internal sealed class RingSlots
{
    private readonly List<IRingCompletionHandler?> _handlers = [];
    private readonly List<uint> _generations = [];
    private readonly Stack<int> _free = new();

    /// <summary>Slots in use.</summary>
    public int Live { get; private set; }

    /// <summary>Slots ever created (in use or free); indexes run from 0 to this.</summary>
    public int Count => _handlers.Count;

    public RingSlot Allocate(IRingCompletionHandler handler)
    {
        int index;
        if (_free.Count > 0)
        {
            index = _free.Pop();
            Debug.Assert(_handlers[index] is null, "a free slot has no handler");
            _handlers[index] = handler;
        }
        else
        {
            index = _handlers.Count;
            _handlers.Add(handler);
            _generations.Add(0);
        }

        Live++;
        return new RingSlot(index, _generations[index]);
    }

    /// <summary>
    /// Gives <paramref name="slot"/>, in use, to another handler, generation and all: the requests
    /// already in flight under its <c>user_data</c> (a receive the kernel event loop armed) complete
    /// to the new handler.
    /// </summary>
    public void Replace(RingSlot slot, IRingCompletionHandler handler)
    {
        Debug.Assert(slot.IsAssigned && _handlers[slot.Index] is not null, "replacing the handler of a slot that is not in use");
        Debug.Assert(_generations[slot.Index] == slot.Generation, "replacing a handler by a stale generation");
        _handlers[slot.Index] = handler;
    }

    /// <summary>Gives the slot back; its generation moves on, so late completions of its owner are dropped.</summary>
    public void Free(RingSlot slot)
    {
        Debug.Assert(slot.IsAssigned && _handlers[slot.Index] is not null, "freeing a slot that is not in use");
        Debug.Assert(_generations[slot.Index] == slot.Generation, "freeing a slot by a stale generation");
        _handlers[slot.Index] = null;
        _generations[slot.Index] = (_generations[slot.Index] + 1) & UserData.GenerationMask;
        _free.Push(slot.Index);
        Live--;
    }

    /// <summary>The handler a completion is for, or null when it was for a slot's previous owner.</summary>
    public IRingCompletionHandler? Find(ulong userData)
    {
        int index = UserData.Slot(userData);
        if ((uint)index >= (uint)_handlers.Count || _generations[index] != UserData.Generation(userData))
        {
            return null;
        }

        return _handlers[index];
    }

    /// <summary>The handler in slot <paramref name="index"/>, or null when it is free.</summary>
    public IRingCompletionHandler? this[int index] => _handlers[index];
}
