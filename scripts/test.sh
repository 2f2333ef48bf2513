#!/usr/bin/env bash
# Sets up a fresh machine, then builds and runs every test suite in Release.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# -p:RingAsserts=true: the Release code keeps its Debug.Assert invariant checks for the tests (Directory.Build.targets).
dotnet build Transport.sln -c Release -warnaserror -p:RingAsserts=true
# --blame-hang-timeout: a hung test fails the run with a dump instead of stalling CI.
dotnet test Transport.sln -c Release --no-build --blame-hang-timeout 5m "$@"
# The package as users get it: packed, installed by a fresh app from a local folder, serving.
bash scripts/test-package.sh
