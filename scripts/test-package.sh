#!/usr/bin/env bash
# What users install is what is tested: packs IoUring.Transport to a scratch folder, checks the
# package's contents, then builds a fresh app outside this repository that references the package
# (from that folder only, not the project) and checks that it serves a request on io_uring.
# Run by scripts/test.sh after the suites; needs only the .NET SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
app_pid=
cleanup() { [ -z "$app_pid" ] || kill "$app_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "test-package: $*" >&2; exit 1; }

dotnet pack src/IoUring.Transport/IoUring.Transport.csproj -c Release -o "$work/packages" -p:ContinuousIntegrationBuild=true -nologo -v q
nupkg=$(ls "$work"/packages/IoUring.Transport.*.nupkg)
version=$(basename "$nupkg" .nupkg); version=${version#IoUring.Transport.}
[ -f "$work/packages/IoUring.Transport.$version.snupkg" ] || fail "no symbol package"
contents=$(unzip -Z1 "$nupkg")
for entry in PACKAGE.md lib/net10.0/IoUring.Transport.dll lib/net10.0/IoUring.dll lib/net10.0/IoUring.Transport.xml; do
  grep -qx "$entry" <<<"$contents" || fail "$entry is missing from the package"
done
symbols=$(unzip -Z1 "$work/packages/IoUring.Transport.$version.snupkg")
for entry in lib/net10.0/IoUring.Transport.pdb lib/net10.0/IoUring.pdb; do
  grep -qx "$entry" <<<"$symbols" || fail "$entry is missing from the symbol package"
done
nuspec=$(unzip -p "$nupkg" IoUring.Transport.nuspec)
grep -q '<dependency ' <<<"$nuspec" && fail "the package depends on another package (the binding ships inside it): $nuspec"
grep -q '<readme>PACKAGE.md</readme>' <<<"$nuspec" || fail "the package names no readme"

# A fresh app, as a user would write it, away from this repository's Directory.Build.props.
mkdir "$work/app"
cat > "$work/app/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$work/packages" />
  </packageSources>
</configuration>
XML
cat > "$work/app/App.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk.Web">
  <PropertyGroup>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="IoUring.Transport" Version="$version" />
  </ItemGroup>
</Project>
XML
cat > "$work/app/Program.cs" <<'CS'
using IoUring.Transport;
using Microsoft.AspNetCore.Connections;

var builder = WebApplication.CreateBuilder(args);
builder.WebHost.UseIoUringTransport(options => options.FallbackToSockets = false);
var app = builder.Build();
app.MapGet("/", (IEnumerable<IConnectionListenerFactory> factories)
    => $"io_uring={factories.OfType<IoUringTransportFactory>().Single().IsUsingIoUring}");
app.Run();
CS
dotnet build "$work/app/App.csproj" -c Release -nologo -v q -o "$work/app/out"
"$work/app/out/App" --urls http://127.0.0.1:0 > "$work/app.log" 2>&1 &
app_pid=$!
url=
for _ in $(seq 1 200); do
  url=$(grep -o 'Now listening on: http://127.0.0.1:[0-9]*' "$work/app.log" | head -1 | sed 's/Now listening on: //') || true
  [ -n "$url" ] && break
  kill -0 "$app_pid" 2>/dev/null || { cat "$work/app.log" >&2; fail "the app exited at start"; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/app.log" >&2; fail "the app never said where it listens"; }
body=$(curl -sf "$url/")
[ "$body" = "io_uring=True" ] || { cat "$work/app.log" >&2; fail "the app answered '$body', not io_uring=True"; }
echo "test-package: IoUring.Transport $version from the package serves on io_uring"
