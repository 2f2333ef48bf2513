using System;
using IoUring.Transport;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the io_uring connection factory (outgoing connections).</summary>
public static class ServiceCollectionIoUringExtensions
{
    /// <summary>
    /// Registers <see cref="IoUringConnectionFactory"/>, also as <see cref="IConnectionFactory"/>, on
    /// the same rings as Kestrel's io_uring transport when the host uses it
    /// (<c>UseIoUringTransport</c>), with the same options (the <c>IoUring</c> configuration
    /// section). Put <see cref="System.Net.Http.HttpClient"/> on it with
    /// <c>handler.ConnectCallback = factory.ConnectStreamAsync</c>.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <returns>The service collection.</returns>
    public static IServiceCollection AddIoUringConnectionFactory(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        WebHostBuilderIoUringExtensions.AddIoUringTransportFactory(services);
        services.TryAddSingleton<IoUringConnectionFactory>();
        services.TryAddSingleton<IConnectionFactory>(static sp => sp.GetRequiredService<IoUringConnectionFactory>());
        // The rings' opcode allowlist includes connect only when the factory exists before they start.
        services.Configure<IoUringTransportOptions>(static o => o.AllowConnect = true);
        return services;
    }

    /// <summary>Registers <see cref="IoUringConnectionFactory"/> with options set in code (applied after configuration).</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configureOptions">Sets the transport's options (shared with the server side, if any).</param>
    /// <returns>The service collection.</returns>
    public static IServiceCollection AddIoUringConnectionFactory(this IServiceCollection services, Action<IoUringTransportOptions> configureOptions)
    {
        ArgumentNullException.ThrowIfNull(configureOptions);
        return services.AddIoUringConnectionFactory().Configure(configureOptions);
    }
}
