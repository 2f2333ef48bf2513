using System;
using System.Collections.Generic;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace IoUring.FunctionalTests;

/// <summary>
/// The one way the functional tests build a host (<see cref="TestServer"/>, <c>IoUringServer</c>
/// and the tests that need a host of their own): a generic host around a web host, its log going
/// only to the provider the test gives, from the level it gives.
/// </summary>
public static class TestHost
{
    /// <param name="configureWebHost">Kestrel, the transport, the application.</param>
    /// <param name="logs">
    /// The only provider that sees the host's log; none: nothing is logged. (A bare
    /// <see cref="HostBuilder"/> adds no provider of its own, unlike <c>Host.CreateDefaultBuilder</c>;
    /// clearing them says that the test's provider is the only one whatever a default adds.)
    /// </param>
    /// <param name="minimumLevel">The least level logged: Debug for tests that look for debug events.</param>
    /// <param name="configuration">App configuration (keys such as <c>IoUring:Enabled</c>) held in memory.</param>
    public static IHost Build(
        Action<IWebHostBuilder> configureWebHost,
        ILoggerProvider? logs = null,
        LogLevel minimumLevel = LogLevel.Warning,
        IReadOnlyDictionary<string, string?>? configuration = null)
    {
        var builder = new HostBuilder();
        if (configuration is not null)
        {
            builder.ConfigureAppConfiguration(c => c.AddInMemoryCollection(configuration));
        }

        return builder
            .ConfigureLogging(logging =>
            {
                logging.ClearProviders().SetMinimumLevel(minimumLevel);
                if (logs is not null)
                {
                    logging.AddProvider(logs);
                }
            })
            .ConfigureWebHost(configureWebHost)
            .Build();
    }
}
