using System.Text.Json.Serialization;

namespace BenchmarkApp;

/// <summary>Source-generated serialization for /json: no reflection on the request path.</summary>
[JsonSerializable(typeof(JsonMessage))]
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
internal sealed partial class BenchmarkJsonContext : JsonSerializerContext;
