#!/usr/bin/env bash
# Installs what a fresh Debian machine needs to build and test the project. Idempotent.
set -euo pipefail

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
# The BPF reproducibility test rebuilds bpf/*.bpf.o (bpf/Makefile); the dispatch tests drop
# capabilities in a child process with setpriv (util-linux).
command -v clang >/dev/null || need_apt+=(clang)
command -v make >/dev/null || need_apt+=(make)
command -v setpriv >/dev/null || need_apt+=(util-linux)
# deploy/seccomp/allow-io-uring.sh merges the io_uring rule into a seccomp profile (its test runs it).
command -v jq >/dev/null || need_apt+=(jq)
# scripts/test-package.sh lists what the packed package holds.
command -v unzip >/dev/null || need_apt+=(unzip)
# The WebSocket sample's test drives its page in headless Chromium (tests/IoUring.FunctionalTests/
# SampleTests.cs). Without the recommended packages (fonts, desktop services) it does not need:
# 19 packages, 100 MB to fetch, 290 MB installed, 16 s to install (measured on bookworm).
need_browser=()
command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || need_browser+=(chromium-headless-shell)
if [ ${#need_apt[@]} -gt 0 ] || [ ${#need_browser[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    missing=("${need_apt[@]}" "${need_browser[@]}")
    echo "setup: missing ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  [ ${#need_apt[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  [ ${#need_browser[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_browser[@]}" >/dev/null
fi

if ! command -v dotnet >/dev/null; then
  echo "setup: the .NET 10 SDK is required (https://dot.net); 'dotnet' is not on PATH" >&2
  exit 1
fi

kernel=$(uname -r)
major=${kernel%%.*}; rest=${kernel#*.}; minor=${rest%%.*}
if [ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 1 ]; }; then
  echo "setup: warning: kernel $kernel is older than 6.1; io_uring tests will fail or fall back" >&2
fi
