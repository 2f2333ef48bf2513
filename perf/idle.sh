#!/usr/bin/env bash
# Memory per idle connection: io_uring against Kestrel's Sockets transport, side by side.
#
#   bash perf/idle.sh
#
# For each round and transport: starts perf/BenchmarkApp, warms it up (8,000 requests, and a first
# batch of connections opened and closed, so pools and JIT are past their first use), reads the
# server's VmRSS, opens CONNECTIONS idle connections (connected, nothing sent) with
# perf/idle_client.py, waits until the server holds a descriptor for each, lets it settle, and
# reads VmRSS again. Reports (RSS with them − RSS before) ÷ CONNECTIONS per transport and round,
# and the median. Not part of CI: it needs ~20,000 descriptors and a quiet minute.
#
# Environment (defaults in brackets):
#   CONNECTIONS [10000]   idle connections per measurement
#   ROUNDS [3]            measurements per transport; the order alternates each round
#   TARGET [http]         http: the HTTP/1.1 port (Kestrel waits for a request on each);
#                         echo: the connection-level echo port (the transport alone, no HTTP)
#   SETTLE [3]            seconds between the last accept and the second RSS reading
#   PORT [5110], H2PORT [5111], ECHOPORT [5112] (not run.sh's, so both can run)
set -euo pipefail

PERF=$(cd "$(dirname "$0")" && pwd)
CONNECTIONS=${CONNECTIONS:-10000}
ROUNDS=${ROUNDS:-3}
TARGET=${TARGET:-http}
SETTLE=${SETTLE:-3}
PORT=${PORT:-5110}
H2PORT=${H2PORT:-5111}
ECHOPORT=${ECHOPORT:-5112}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Server and client each hold one descriptor per connection, plus their own.
need=$(( CONNECTIONS + 1000 ))
ulimit -n "$need" 2>/dev/null || die "cannot raise the open file limit to $need (hard limit $(ulimit -Hn))"

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
log "building perf/BenchmarkApp (Release)"
dotnet build "$PERF/BenchmarkApp/BenchmarkApp.csproj" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q >/dev/null \
  || die "build failed"
APP="$PERF/.artifacts/bin/BenchmarkApp/release/BenchmarkApp"

case $TARGET in
  http) target_port=$PORT ;;
  echo) target_port=$ECHOPORT ;;
  *) die "TARGET must be http or echo" ;;
esac

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }

server_pid=""
client_pid=""
cleanup() {
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

# measure <transport>: prints "<rss before KiB> <rss after KiB> <descriptors added>"
measure() {
  local transport=$1 logfile
  logfile=$(mktemp)
  "$APP" --transport "$transport" --port "$PORT" --h2port "$H2PORT" --echoport "$ECHOPORT" > "$logfile" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/plaintext" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$logfile" >&2; die "server exited at start"; }
    sleep 0.1
  done
  grep -q "transport=$transport " "$logfile" || { cat "$logfile" >&2; die "server is not serving on $transport"; }

  # Warm-up: 8,000 keep-alive requests on 8 connections (so every ring serves some), then a tenth
  # of the connections opened and closed. The requests matter for io_uring: its ring loop never
  # returns, so the JIT replaces it on the stack (OSR) once the loop has run enough iterations.
  # With only 200 requests that compile fell into the measured window, and the JIT's scratch
  # memory (about 5 MB, malloc'd on the ring thread and kept by the allocator) was counted as
  # ~500 bytes per idle connection. Sockets' event loop is precompiled (ReadyToRun): no such step.
  local curls=()
  for _ in 1 2 3 4 5 6 7 8; do
    curl -sf "http://127.0.0.1:$PORT/plaintext?[1-1000]" > /dev/null &
    curls+=($!)
  done
  wait "${curls[@]}"
  echo | python3 "$PERF/idle_client.py" "$target_port" $(( CONNECTIONS / 10 )) > /dev/null
  sleep "$SETTLE"

  local before fds_before after fds_after
  before=$(rss_kib "$server_pid")
  fds_before=$(fds "$server_pid")
  coproc CLIENT { python3 "$PERF/idle_client.py" "$target_port" "$CONNECTIONS"; }
  client_pid=$CLIENT_PID
  local line
  read -r line <&"${CLIENT[0]}"
  [ "$line" = "connected $CONNECTIONS" ] || die "client: $line"
  for _ in $(seq 1 300); do
    [ $(( $(fds "$server_pid") - fds_before )) -ge "$CONNECTIONS" ] && break
    sleep 0.1
  done
  sleep "$SETTLE"
  after=$(rss_kib "$server_pid")
  fds_after=$(fds "$server_pid")
  exec {CLIENT[1]}>&-
  wait "$client_pid" 2>/dev/null || true
  client_pid=""
  kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true
  server_pid=""
  rm -f "$logfile"
  echo "$before $after $(( fds_after - fds_before ))"
}

results=$(mktemp)
for round in $(seq 1 "$ROUNDS"); do
  if [ $(( round % 2 )) -eq 1 ]; then order="iouring sockets"; else order="sockets iouring"; fi
  for transport in $order; do
    read -r before after added < <(measure "$transport")
    per=$(( (after - before) * 1024 / CONNECTIONS ))
    log "round $round $transport: RSS $before -> $after KiB, +$added descriptors, $per bytes per idle connection"
    echo "$transport $per" >> "$results"
  done
done

echo
echo "| Transport | bytes of RSS per idle connection (median of $ROUNDS) | rounds |"
echo "|---|--:|---|"
for transport in iouring sockets; do
  values=$(awk -v t="$transport" '$1 == t { print $2 }' "$results" | sort -n)
  median=$(echo "$values" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  echo "| $transport | $median | $(echo $values | tr ' ' ',') |"
done
rm -f "$results"
