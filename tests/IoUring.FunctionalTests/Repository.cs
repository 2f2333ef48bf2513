using System;
using System.IO;
using Xunit;

namespace IoUring.FunctionalTests;

/// <summary>The checkout these tests were built in: the directory that holds Transport.sln.</summary>
internal static class Repository
{
    /// <summary>The checkout's directory, found upwards from this test's build output.</summary>
    public static string Root()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Transport.sln")))
        {
            directory = directory.Parent;
        }

        Assert.NotNull(directory);
        return directory.FullName;
    }
}
