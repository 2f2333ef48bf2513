using System;
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace IoUring.FunctionalTests;

/// <summary>Keeps every log entry so tests can assert on what the transport said.</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<(string Category, LogLevel Level, EventId EventId, string Message)> Entries { get; } = new();

    /// <summary>Raised after each entry is kept, on the logging thread, so tests can wait for an event instead of polling.</summary>
    public event Action<(string Category, LogLevel Level, EventId EventId, string Message)>? Logged;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(CapturingLoggerProvider provider, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            // The exception's text too, so tests can look for what it says.
            var entry = (category, logLevel, eventId, formatter(state, exception) + (exception is null ? "" : " " + exception));
            provider.Entries.Enqueue(entry);
            provider.Logged?.Invoke(entry);
        }
    }
}
