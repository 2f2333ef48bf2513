using IoUring.Transport;

// The proxy's backend, an ordinary app on io_uring: a greeting, and an echo of what is posted.
// Every response says which transport served it, so a client of the proxy sees both hops.
var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseIoUringTransport();

var app = builder.Build();
var transport = app.Services.GetRequiredService<IoUringTransportFactory>();
app.Use((context, next) =>
{
    context.Response.Headers["X-Backend"] = transport.IsUsingIoUring ? "io_uring" : "Sockets";
    return next(context);
});
app.MapGet("/", () => "Hello from the backend!");
app.MapPost("/echo", (HttpRequest request) => Results.Stream(request.Body, request.ContentType));

await app.StartAsync();
Console.WriteLine($"Transport: {(transport.IsUsingIoUring ? "io_uring" : "Sockets (fallback)")}");
Console.WriteLine($"Listening on: {string.Join(", ", app.Urls)}");
await app.WaitForShutdownAsync();
