#!/usr/bin/env bash
# Soak: sustained mixed load for minutes, then checks that the server's resources come back.
#
#   bash perf/soak.sh                  # 3 minutes on io_uring
#   MINUTES=30 bash perf/soak.sh
#   TRANSPORT=sockets bash perf/soak.sh
#
# Starts perf/BenchmarkApp, warms it up with the same load for WARMUP seconds, lets it settle and
# takes the baseline: VmRSS, open descriptors (/proc/<pid>/fd), and the transport's metrics
# (GET /stats?gc, after a full GC: provided buffers in use, open connections, managed heap). Then
# runs, at once and for MINUTES: wrk on /plaintext (128 connections) and on /64k (16 connections),
# and perf/soak_client.py churning the echo port (echo with half-close, or a reset mid-stream).
# It samples every INTERVAL seconds, and after the load stops and SETTLE seconds pass it checks:
#   - descriptors (but the runtime's lazily opened assemblies) are back to the baseline, exactly;
#   - provided buffers in use and open connections are back to the baseline;
#   - the managed heap after a full GC is within HEAP_SLACK_MB of the baseline;
#   - VmRSS is within RSS_SLACK percent of the baseline (the GC keeps memory it has committed,
#     so RSS is judged loosely; the heap and the descriptors are the precise checks).
# Exits 1 if a check fails or the echo client saw a wrong byte. Not part of CI.
#
# Environment (defaults in brackets): MINUTES [3], WARMUP [10], INTERVAL [30], SETTLE [10],
# TRANSPORT [iouring], RSS_SLACK [25], HEAP_SLACK_MB [8], PORT [5120], H2PORT [5121], ECHOPORT [5122]
set -euo pipefail

PERF=$(cd "$(dirname "$0")" && pwd)
MINUTES=${MINUTES:-3}
WARMUP=${WARMUP:-10}
INTERVAL=${INTERVAL:-30}
SETTLE=${SETTLE:-10}
TRANSPORT=${TRANSPORT:-iouring}
RSS_SLACK=${RSS_SLACK:-25}
HEAP_SLACK_MB=${HEAP_SLACK_MB:-8}
PORT=${PORT:-5120}
H2PORT=${H2PORT:-5121}
ECHOPORT=${ECHOPORT:-5122}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in wrk curl python3; do command -v "$tool" >/dev/null || die "$tool is required (apt-get install wrk curl python3)"; done

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
log "building perf/BenchmarkApp (Release)"
dotnet build "$PERF/BenchmarkApp/BenchmarkApp.csproj" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q >/dev/null \
  || die "build failed"
APP="$PERF/.artifacts/bin/BenchmarkApp/release/BenchmarkApp"

logfile=$(mktemp)
"$APP" --transport "$TRANSPORT" --port "$PORT" --h2port "$H2PORT" --echoport "$ECHOPORT" > "$logfile" 2>&1 &
server_pid=$!
load_pids=()
cleanup() {
  for pid in "${load_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill "$server_pid" 2>/dev/null || true
  rm -f "$logfile"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/plaintext" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$logfile" >&2; die "server exited at start"; }
  sleep 0.1
done
grep -q "transport=$TRANSPORT " "$logfile" || { cat "$logfile" >&2; die "server is not serving on $TRANSPORT"; }

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }
# Descriptors but mapped files: the runtime opens assemblies lazily, which is not the transport's doing.
fds() { for fd in "/proc/$server_pid/fd/"*; do readlink "$fd" 2>/dev/null; done | grep -cv '\.dll$'; }
stat_of() { curl -sf "http://127.0.0.1:$PORT/stats$2" | awk -v n="$1" '$1 == n { print $2 }'; }
sample() {
  local stats
  stats=$(curl -sf "http://127.0.0.1:$PORT/stats")
  printf 'rss=%sKiB fds=%s connections=%s buffers_in_use=%s heap=%sMiB\n' "$(rss_kib)" "$(fds)" \
    "$(awk '$1 == "iouring.connections.active" { print $2 }' <<< "$stats")" \
    "$(awk '$1 == "iouring.buffers.in_use" { print $2 }' <<< "$stats")" \
    "$(awk '$1 == "gc.heap_bytes" { printf "%.1f", $2 / 1048576 }' <<< "$stats")"
}

# run_load <seconds>: every kind of load at once; fails if the echo client saw a wrong byte.
run_load() {
  local seconds=$1 out
  out=$(mktemp)
  load_pids=()
  wrk -t1 -c128 -d "${seconds}s" "http://127.0.0.1:$PORT/plaintext" > "$out.plain" 2>&1 & load_pids+=($!)
  wrk -t1 -c16 -d "${seconds}s" "http://127.0.0.1:$PORT/64k" > "$out.64k" 2>&1 & load_pids+=($!)
  python3 "$PERF/soak_client.py" "$ECHOPORT" "$seconds" 8 > "$out.echo" 2>&1 & load_pids+=($!)
  local echo_pid=$!
  if [ "$seconds" -gt "$INTERVAL" ]; then
    local elapsed=0
    while [ "$elapsed" -lt "$seconds" ]; do
      sleep "$INTERVAL"; elapsed=$(( elapsed + INTERVAL ))
      kill -0 "$server_pid" 2>/dev/null || die "the server died under load"
      log "under load, ${elapsed}s: $(sample)"
    done
  fi
  local echo_ok=0
  wait "$echo_pid" || echo_ok=1
  wait "${load_pids[@]}" 2>/dev/null || true
  load_pids=()
  log "load: plaintext $(awk '/Requests\/sec/ { print $2 }' "$out.plain") req/s, 64k $(awk '/Requests\/sec/ { print $2 }' "$out.64k") req/s, echo client: $(cat "$out.echo")"
  rm -f "$out" "$out.plain" "$out.64k" "$out.echo"
  [ "$echo_ok" -eq 0 ] || die "the echo client saw wrong bytes"
}

log "warm-up, ${WARMUP}s"
run_load "$WARMUP"
sleep "$SETTLE"
fd_targets() { for fd in "/proc/$server_pid/fd/"*; do readlink "$fd" 2>/dev/null | sed 's/\[[0-9]*\]//'; done | grep -v '\.dll$' | sort | uniq -c; }
base_rss=$(rss_kib); base_fds=$(fds); base_targets=$(fd_targets); base_heap=$(stat_of gc.heap_bytes "?gc")
base_conns=$(stat_of iouring.connections.active ""); base_buffers=$(stat_of iouring.buffers.in_use "")
log "baseline: rss=${base_rss}KiB fds=$base_fds heap=$(( base_heap / 1048576 ))MiB connections=${base_conns:-n/a} buffers_in_use=${base_buffers:-n/a}"

log "soak, ${MINUTES} min of $TRANSPORT"
run_load $(( MINUTES * 60 ))
sleep "$SETTLE"
end_rss=$(rss_kib); end_fds=$(fds); end_targets=$(fd_targets); end_heap=$(stat_of gc.heap_bytes "?gc")
end_conns=$(stat_of iouring.connections.active ""); end_buffers=$(stat_of iouring.buffers.in_use "")
log "after: rss=${end_rss}KiB fds=$end_fds heap=$(( end_heap / 1048576 ))MiB connections=${end_conns:-n/a} buffers_in_use=${end_buffers:-n/a}"

failed=0
check() { if eval "$2"; then log "ok: $1"; else log "FAILED: $1"; failed=1; fi; }
check "descriptors back to $base_fds (now $end_fds)" '[ "$end_fds" -eq "$base_fds" ]'
[ "$end_fds" -eq "$base_fds" ] || diff <(echo "$base_targets") <(echo "$end_targets") >&2 || true
if [ "$TRANSPORT" = iouring ]; then
  # Both readings are taken through a /stats request, whose own connection (and the buffer holding
  # its request) is counted each time: equal readings mean nothing else is left.
  check "open connections back to $base_conns (now $end_conns)" '[ "$end_conns" = "$base_conns" ]'
  check "provided buffers in use back to $base_buffers (now $end_buffers)" '[ "$end_buffers" = "$base_buffers" ]'
fi
check "managed heap within ${HEAP_SLACK_MB} MiB of the baseline ($(( (end_heap - base_heap) / 1024 )) KiB more)" \
  '[ $(( end_heap - base_heap )) -le $(( HEAP_SLACK_MB * 1048576 )) ]'
check "RSS within ${RSS_SLACK}% of the baseline ($(( (end_rss - base_rss) * 100 / base_rss ))%)" \
  '[ $(( (end_rss - base_rss) * 100 )) -le $(( base_rss * RSS_SLACK )) ]'
exit "$failed"
