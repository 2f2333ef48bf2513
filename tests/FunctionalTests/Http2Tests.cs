using System;
using System.Diagnostics;
using System.Net;
using System.Net.Http;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Xunit;

namespace IoUring.FunctionalTests;

public class Http2Tests
{
    [Fact]
    public async Task Http2WithPriorKnowledgeOverCleartext()
    {
        await using var server = await TestServer.StartAsync(
            app => app.Run(context => context.Response.WriteAsync(context.Request.Protocol)),
            kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2));
        using HttpClient client = server.CreateClient(HttpVersion.Version20);
        var tasks = new Task<string>[50];
        for (int i = 0; i < tasks.Length; i++)
        {
            tasks[i] = client.GetStringAsync("/", TestContext.Current.CancellationToken);
        }

        Assert.All(await Task.WhenAll(tasks), p => Assert.Equal("HTTP/2", p));
    }

    [Fact]
    public async Task Http2OverTlsNegotiatedWithAlpn()
    {
        using X509Certificate2 certificate = CreateSelfSignedCertificate();
        await using var server = await TestServer.StartAsync(
            app => app.Run(async context =>
            {
                var body = new byte[1 << 20];
                Random.Shared.NextBytes(body);
                context.Response.Headers["X-Protocol"] = context.Request.Protocol;
                context.Response.Headers["X-Tls"] = context.Request.IsHttps.ToString();
                await context.Response.Body.WriteAsync(body);
            }),
            kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen =>
            {
                listen.Protocols = HttpProtocols.Http1AndHttp2;
                listen.UseHttps(certificate);
            }));
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                // Trust exactly the certificate this test made.
                RemoteCertificateValidationCallback = (_, presented, _, _) => presented is not null && presented.GetCertHashString() == certificate.GetCertHashString(),
            },
        };
        using HttpClient client = server.CreateClient(HttpVersion.Version20, handler);
        for (int i = 0; i < 5; i++)
        {
            using HttpResponseMessage response = await client.GetAsync("/", TestContext.Current.CancellationToken);
            Assert.Equal(HttpVersion.Version20, response.Version);
            Assert.Equal("HTTP/2", Assert.Single(response.Headers.GetValues("X-Protocol")));
            Assert.Equal("True", Assert.Single(response.Headers.GetValues("X-Tls")));
            Assert.Equal(1 << 20, (await response.Content.ReadAsByteArrayAsync(TestContext.Current.CancellationToken)).Length);
        }
    }

    [Fact]
    public async Task CurlNegotiatesHttp2OverTls()
    {
        // A client other than .NET's: curl (installed by scripts/setup.sh) with its own TLS stack.
        using X509Certificate2 certificate = CreateSelfSignedCertificate();
        await using var server = await TestServer.StartAsync(
            app => app.Run(context => context.Response.WriteAsync($"{context.Request.Protocol} {context.Request.IsHttps}")),
            kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen =>
            {
                listen.Protocols = HttpProtocols.Http1AndHttp2;
                listen.UseHttps(certificate);
            }));
        var start = new ProcessStartInfo("curl", ["--silent", "--show-error", "--insecure", "--http2", "--max-time", "30", $"https://127.0.0.1:{server.Port}/"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using Process curl = Process.Start(start)!;
        Task<string> stdout = curl.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        Task<string> stderr = curl.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        await curl.WaitForExitAsync(TestContext.Current.CancellationToken).DefaultTimeout(times: 2);
        Assert.True(curl.ExitCode == 0, $"curl exited with {curl.ExitCode}: {await stderr}");
        Assert.Equal("HTTP/2 True", await stdout);
    }

    internal static X509Certificate2 CreateSelfSignedCertificate()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using X509Certificate2 certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        // Round-trip through PKCS#12 so the private key is usable by SslStream on Linux.
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);
    }
}
