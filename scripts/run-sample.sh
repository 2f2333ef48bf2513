#!/usr/bin/env bash
# Sets up a fresh machine, then runs samples/HelloWorld on the io_uring transport.
# Listens on http://127.0.0.1:5000 (HTTP/1.1) and http://127.0.0.1:5001 (HTTP/2 only, cleartext),
# as samples/HelloWorld/appsettings.json says. Extra arguments go to the app.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
exec dotnet run --project samples/HelloWorld -c Release -- "$@"
