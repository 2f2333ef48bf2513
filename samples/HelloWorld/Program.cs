using IoUring.Transport;
using Microsoft.AspNetCore.Connections;

// The one line that matters: Kestrel runs on io_uring. Everything below is an ordinary app.
var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseIoUringTransport();

var app = builder.Build();
app.MapGet("/", () => "Hello, World!");
app.MapGet("/json", () => new { message = "Hello, World!" });

await app.StartAsync();

// Report which transport Kestrel picked (io_uring, or Sockets after a fallback with its reason logged).
var factory = app.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().Single();
Console.WriteLine($"Transport: {(factory.IsUsingIoUring ? "io_uring" : "Sockets (fallback)")}");
Console.WriteLine($"Dispatch: {factory.ActiveDispatch}");
Console.WriteLine($"Listening on: {string.Join(", ", app.Urls)}");

await app.WaitForShutdownAsync();
