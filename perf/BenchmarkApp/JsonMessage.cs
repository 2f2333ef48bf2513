namespace BenchmarkApp;

/// <summary>The /json body, as in the TechEmpower JSON test.</summary>
internal sealed record JsonMessage(string Message);
