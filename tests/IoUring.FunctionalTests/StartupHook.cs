/// <summary>The runtime's startup hook (DOTNET_STARTUP_HOOKS): named so, outside any namespace.</summary>
#pragma warning disable CA1050 // the runtime looks for exactly this name
internal static class StartupHook
#pragma warning restore CA1050
{
    public static void Initialize() => IoUring.FunctionalTests.ChildProcess.RunIfChild();
}
