using System;
using System.Collections;
using System.Collections.Generic;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace IoUring.Transport.Internal;

/// <summary>
/// The connection is its own <see cref="IFeatureCollection"/> and its own <see cref="IDuplexPipe"/>,
/// as Kestrel's Sockets transport keeps its features in fields: the seven features it implements
/// cost nothing per connection, where a <see cref="FeatureCollection"/> held them in a dictionary
/// (measured with dotnet-gcdump: about 250 bytes per idle connection; perf/README.md).
/// </summary>
internal sealed partial class IoUringConnection : IFeatureCollection
{
    // Features others set (Kestrel, connection middleware), and the connection's own features
    // replaced or removed (a null value hides one): created by the first Set. Guarded like a
    // FeatureCollection: by the connection's single logical owner at a time, not by a lock.
    private List<KeyValuePair<Type, object?>>? _setFeatures;
    private int _featureRevision;

    PipeReader IDuplexPipe.Input => _reader;

    PipeWriter IDuplexPipe.Output => _outputWriter;

    bool IFeatureCollection.IsReadOnly => false;

    int IFeatureCollection.Revision => _featureRevision;

    object? IFeatureCollection.this[Type key]
    {
        get
        {
            ArgumentNullException.ThrowIfNull(key);
            int index = IndexOfSetFeature(key);
            if (index >= 0)
            {
                return _setFeatures![index].Value;
            }

            return IsOwnFeature(key) ? this : null;
        }

        set
        {
            ArgumentNullException.ThrowIfNull(key);
            SetFeature(key, value);
        }
    }

    TFeature? IFeatureCollection.Get<TFeature>() where TFeature : default => (TFeature?)((IFeatureCollection)this)[typeof(TFeature)];

    void IFeatureCollection.Set<TFeature>(TFeature? instance) where TFeature : default => SetFeature(typeof(TFeature), instance);

    IEnumerator<KeyValuePair<Type, object>> IEnumerable<KeyValuePair<Type, object>>.GetEnumerator() => EnumerateFeatures().GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => EnumerateFeatures().GetEnumerator();

    // The features the connection itself implements, in the order they are enumerated.
    private static readonly Type[] s_ownFeatures =
    [
        typeof(IConnectionIdFeature), typeof(IConnectionTransportFeature), typeof(IConnectionItemsFeature),
        typeof(IMemoryPoolFeature), typeof(IConnectionLifetimeFeature), typeof(IConnectionEndPointFeature),
        typeof(IConnectionSocketFeature),
    ];

    private static bool IsOwnFeature(Type key)
    {
        foreach (Type own in s_ownFeatures)
        {
            if (own == key)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>As <see cref="FeatureCollection"/>: null removes a feature, anything else adds or replaces it.</summary>
    private void SetFeature(Type key, object? value)
    {
        bool own = IsOwnFeature(key);
        // An own feature set back to the connection needs no entry; one removed keeps a null entry
        // that hides the connection; any other feature removed needs no entry.
        bool needsEntry = own ? !ReferenceEquals(value, this) : value is not null;
        int index = IndexOfSetFeature(key);
        if (needsEntry)
        {
            var entry = new KeyValuePair<Type, object?>(key, value);
            if (index >= 0)
            {
                _setFeatures![index] = entry;
            }
            else
            {
                (_setFeatures ??= []).Add(entry);
            }
        }
        else if (index >= 0)
        {
            _setFeatures!.RemoveAt(index);
        }

        _featureRevision++;
    }

    /// <summary>Where <paramref name="key"/> is among the features set, or -1.</summary>
    private int IndexOfSetFeature(Type key)
    {
        List<KeyValuePair<Type, object?>>? set = _setFeatures;
        if (set is not null)
        {
            for (int i = 0; i < set.Count; i++)
            {
                if (set[i].Key == key)
                {
                    return i;
                }
            }
        }

        return -1;
    }

    private IEnumerable<KeyValuePair<Type, object>> EnumerateFeatures()
    {
        IFeatureCollection features = this;
        foreach (Type key in s_ownFeatures)
        {
            if (features[key] is { } feature)
            {
                yield return new KeyValuePair<Type, object>(key, feature);
            }
        }

        if (_setFeatures is not null)
        {
            foreach (KeyValuePair<Type, object?> feature in _setFeatures.ToArray())
            {
                if (feature.Value is not null && !IsOwnFeature(feature.Key))
                {
                    yield return new KeyValuePair<Type, object>(feature.Key, feature.Value);
                }
            }
        }
    }
}
