using System;
using System.Linq;
using IoUring.Transport;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;

namespace Microsoft.AspNetCore.Hosting;

/// <summary>Extension methods that put Kestrel on the io_uring transport.</summary>
public static class WebHostBuilderIoUringExtensions
{
    /// <summary>The configuration section the options bind from (so <c>IoUring__Enabled=false</c> in the environment switches io_uring off).</summary>
    public const string ConfigurationSection = "IoUring";

    /// <summary>
    /// Runs Kestrel on the io_uring transport. Options bind from the <c>IoUring</c> configuration
    /// section; where io_uring is unavailable Kestrel serves on its Sockets transport and logs why.
    /// </summary>
    /// <param name="hostBuilder">The web host builder.</param>
    /// <returns>The web host builder.</returns>
    public static IWebHostBuilder UseIoUringTransport(this IWebHostBuilder hostBuilder)
    {
        ArgumentNullException.ThrowIfNull(hostBuilder);
        return hostBuilder.ConfigureServices(services =>
        {
            if (services.Any(d => d.ServiceType == typeof(IConnectionListenerFactory) && d.ImplementationFactory == s_listenerFactory))
            {
                return;
            }

            AddIoUringTransportFactory(services);
            // Registered after Kestrel's own Sockets factory: Kestrel tries the most recent
            // registration first.
            services.AddSingleton(typeof(IConnectionListenerFactory), s_listenerFactory);
        });
    }

    private static readonly Func<IServiceProvider, object> s_listenerFactory = static sp => sp.GetRequiredService<IoUringTransportFactory>();

    /// <summary>
    /// The one <see cref="IoUringTransportFactory"/> of a service provider, whose rings the server
    /// side and <see cref="IoUringConnectionFactory"/> share, and its options' binding to the
    /// <c>IoUring</c> configuration section. Registered once, whichever asks first.
    /// </summary>
    internal static void AddIoUringTransportFactory(IServiceCollection services)
    {
        if (services.Any(d => d.ServiceType == typeof(IoUringTransportFactory)))
        {
            return;
        }

        services.AddSingleton<IoUringTransportFactory>();
        services.AddOptions<IoUringTransportOptions>().BindConfiguration(ConfigurationSection);
    }

    /// <summary>Runs Kestrel on the io_uring transport with options set in code (applied after configuration).</summary>
    /// <param name="hostBuilder">The web host builder.</param>
    /// <param name="configureOptions">Sets the transport's options.</param>
    /// <returns>The web host builder.</returns>
    public static IWebHostBuilder UseIoUringTransport(this IWebHostBuilder hostBuilder, Action<IoUringTransportOptions> configureOptions)
    {
        ArgumentNullException.ThrowIfNull(configureOptions);
        return hostBuilder.UseIoUringTransport().ConfigureServices(services => services.Configure(configureOptions));
    }
}
