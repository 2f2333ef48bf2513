using BenchmarkDotNet.Running;

namespace IoUring.Benchmarks;

public static class Program
{
    // dotnet run -c Release --project perf/Microbenchmarks -- --filter '*' --job short
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
