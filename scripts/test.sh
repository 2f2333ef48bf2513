#!/usr/bin/env bash
# Sets up a fresh machine, then builds and runs every test suite in Release.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build Transport.sln -c Release -warnaserror
# --blame-hang-timeout: a hung test fails the run with a dump instead of stalling CI.
dotnet test Transport.sln -c Release --no-build --blame-hang-timeout 5m "$@"
