#!/usr/bin/env bash
# The YARP sample (samples/YarpProxy in front of samples/YarpProxy/Backend) on io_uring both ways
# against Sockets both ways, alternating, in one run.
#
#   bash perf/proxy.sh
#
# Builds both projects in Release into perf/.artifacts/, then for every round starts backend and
# proxy once per mode (the order alternates from round to round):
#   iouring   the sample as it ships: Kestrel on io_uring in both, the proxy's connections to the
#             backend made by IoUringConnectionFactory on its rings (IoUring__FallbackToSockets=false,
#             so a fallback cannot measure Sockets twice)
#   sockets   IoUring__Enabled=false for both: Kestrel on Sockets, and IoUringConnectionFactory
#             connects with Socket (its fallback: Kestrel's socket connection under a Stream)
#   stock     IoUring__Enabled=false for both and the cluster's UseIoUringConnectionFactory=false:
#             YARP as it is without this library, HttpClient connecting its own sockets
#   inbound   (not in the default set) io_uring in both, but the proxy's connections HttpClient's own
#             sockets: what the connection factory adds on top of the inbound side
# Each start is checked: the proxy's GET /proxy/transport (inbound transport, outbound, connections
# the rings made), the backend's X-Backend header, and the io_uring descriptors each process holds
# or must not hold. It warms the pair up and measures wrk against the proxy at each connection
# count. Per run: proxied requests per second, p50 and p99, CPU time per proxied request of the
# proxy and of the backend (utime + stime of all their threads, from /proc/<pid>/stat), and how
# busy each core was with anything else. About 6 minutes with the defaults, once built.
#
# Placement on a 2-core machine: the proxy alone on PROXY_CPU (0), the backend and wrk together on
# BACKEND_CPU and CLIENT_CPU (1). The proxy does the most work per request (it parses the request,
# forwards it on a pooled connection, reads the answer and copies it back), so it gets a core of
# its own and is the limit: its core is saturated, the other one is not (the results give both
# cores' load). Under taskset each runtime sees one processor: one ring (or one Sockets I/O queue)
# and one GC heap per process, the same in every mode.
#
# Results: perf/results/proxy-<UTC time>/ (results.tsv: every run; results.md: medians, spread,
# ratios of io_uring to the other modes; meta.env: machine, load averages); wrk's output and the apps' logs in
# perf/results/tmp/proxy-<UTC time>/ (not committed).
#
# Environment (defaults in brackets):
#   ROUNDS [3]            rounds; each runs every mode
#   DURATION [8]          seconds measured per connection count
#   WARMUP [20]           seconds of load at the highest connection count after each start (the JIT
#                         recompiles hot code for 15-30 s on one loaded core)
#   SETTLE [3]            seconds of load at each connection count before it is measured
#   CONNECTIONS ["16 128"]
#   MODES ["iouring sockets stock"]  (and inbound)
#   PROXY_CPU [0], BACKEND_CPU [1], CLIENT_CPU [1]   CPU lists as taskset takes them
#   PROXY_PORT [5200], BACKEND_PORT [5201]
#   NICE [0]              nice value for proxy, backend and wrk
#   QUIET_WAIT [15], QUIET_BUSY [15]   before each measured connection count, wait up to QUIET_WAIT
#                         seconds for a second in which the machine's CPUs were at most QUIET_BUSY %
#                         busy (proxy and backend idle between runs), so that a run starts when
#                         nothing else is running; the wait is recorded. What still runs during a
#                         run shows in the "else on ... core" columns
#   HOG [0]               busy loops pinned to the proxy's core during each measured run (settle and
#                         measurement): how each mode's proxy shares its core with other work, as on
#                         a busy host (no retries then; the "else on the proxy's core" column is the hogs)
#   MAX_OTHER [10], RETRIES [4]   a run in which anything but the proxy took more than MAX_OTHER % of
#                         the proxy's core is measured again (proxy and backend stay up), at most
#                         RETRIES times in the whole run; the last attempt is kept either way
set -euo pipefail

PERF=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$PERF")
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-20}
SETTLE=${SETTLE:-3}
CONNECTIONS=${CONNECTIONS:-"16 128"}
MODES=${MODES:-"iouring sockets stock"}
PROXY_CPU=${PROXY_CPU:-0}
BACKEND_CPU=${BACKEND_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-1}
PROXY_PORT=${PROXY_PORT:-5200}
BACKEND_PORT=${BACKEND_PORT:-5201}
NICE=${NICE:-0}
QUIET_WAIT=${QUIET_WAIT:-15}
MAX_OTHER=${MAX_OTHER:-10}
RETRIES=${RETRIES:-4}
HOG=${HOG:-0}
[ "$HOG" -eq 0 ] || RETRIES=0
QUIET_BUSY=${QUIET_BUSY:-15}

# shellcheck source=perf/common.sh
. "$PERF/common.sh"

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
install_missing "${need_apt[@]}"
require wrk taskset curl python3 dotnet
for p in "$PROXY_PORT" "$BACKEND_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use (set PROXY_PORT, BACKEND_PORT)"; fi
done

build_release samples/YarpProxy/YarpProxy.csproj samples/YarpProxy/Backend/Backend.csproj
PROXY_DIR="$PERF/.artifacts/bin/YarpProxy/release"
BACKEND_DIR="$PERF/.artifacts/bin/Backend/release"
[ -x "$PROXY_DIR/YarpProxy" ] && [ -x "$BACKEND_DIR/Backend" ] || die "the apps were not built"

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="$PERF/results/proxy-$STAMP"
RAW="$PERF/results/tmp/proxy-$STAMP"
mkdir -p "$OUT" "$RAW"
CLK_TCK=$(getconf CLK_TCK)
started=$(date +%s)
{
  echo "stamp=$STAMP"
  echo "kernel=$(uname -r)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "cpus=$(nproc --all)"
  echo "virtualization=$(systemd-detect-virt 2>/dev/null || echo unknown)"
  echo "dotnet_sdk=$(dotnet --version)"
  echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "rounds=$ROUNDS"
  echo "duration_s=$DURATION"
  echo "warmup_s=$WARMUP"
  echo "settle_s=$SETTLE"
  echo "proxy_cpu=$PROXY_CPU"
  echo "backend_cpu=$BACKEND_CPU"
  echo "client_cpu=$CLIENT_CPU"
  echo "nice=$NICE"
  echo "hog=$HOG"
  echo "max_other_pct=$MAX_OTHER"
  echo "retries=$RETRIES"
  echo "quiet=at most ${QUIET_BUSY}% busy for a second, waited for up to ${QUIET_WAIT} s before each measured connection count"
  echo "clk_tck=$CLK_TCK"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/meta.env"
RESULTS="$OUT/results.tsv"
printf 'round\tmode\tconnections\trequests\tseconds\trps\tp50_ms\tp99_ms\terrors\tproxy_ticks\tbackend_ticks\tclient_ticks\tproxy_core_busy_ticks\tother_core_busy_ticks\twall_s\tconnected_on_rings\tloadavg1\tquiet_wait_s\tattempt\tproxy_context_switches\n' > "$RESULTS"

proxy_pid=""
backend_pid=""
stop_apps() {
  local pid
  for pid in "$proxy_pid" "$backend_pid"; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  done
  proxy_pid=""; backend_pid=""
  return 0
}
hog_pids=()
start_hogs() {
  local i
  for (( i = 0; i < HOG; i++ )); do
    nice -n "$NICE" taskset -c "$PROXY_CPU" sh -c 'while :; do :; done' &
    hog_pids+=($!)
  done
}
stop_hogs() {
  local pid
  for pid in "${hog_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  hog_pids=()
  return 0
}
trap 'stop_hogs; stop_apps' EXIT
trap 'exit 130' INT TERM

# utime + stime of this shell's waited-for children (fields 16 and 17): wrk's CPU time.
children_ticks() {
  local stat rest
  stat=$(< "/proc/$$/stat"); rest=${stat##*) }
  read -r -a f <<< "$rest"
  echo $(( f[13] + f[14] ))
}
# Busy ticks (user, nice, system, irq, softirq) of the CPUs in a list such as "0" or "0-1".
cpu_busy() {
  local cpus=" " part
  for part in ${1//,/ }; do
    if [[ $part == *-* ]]; then cpus+="$(seq -s ' ' "${part%-*}" "${part#*-}") "; else cpus+="$part "; fi
  done
  awk -v cpus="$cpus" '$1 ~ /^cpu[0-9]+$/ && index(cpus, " " substr($1, 4) " ") { busy += $2 + $3 + $4 + $7 + $8 } END { print busy }' /proc/stat
}
# wait_quiet: see QUIET_WAIT; sets waited_s.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat; }
wait_quiet() {
  local busy0 idle0 busy1 idle1
  waited_s=0
  while [ "$waited_s" -lt "$QUIET_WAIT" ]; do
    read -r busy0 idle0 < <(machine_ticks)
    sleep 1
    read -r busy1 idle1 < <(machine_ticks)
    [ $(( (busy1 - busy0) * 100 )) -le $(( QUIET_BUSY * (busy1 - busy0 + idle1 - idle0) )) ] && return 0
    waited_s=$(( waited_s + 1 ))
  done
}
# Context switches, voluntary and not, of all of a process's threads (those alive when read).
context_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }
io_uring_fds() { find "/proc/$1/fd" -lname 'anon_inode:\[io_uring\]' 2>/dev/null | wc -l; }

# start <dir> <app> <cpu> <log> <mode> [args...]: the app from its folder (its appsettings.json), pinned.
start() {
  local dir=$1 app=$2 cpu=$3 logfile=$4 mode=$5
  shift 5
  local environment=(IoUring__FallbackToSockets=false)
  case $mode in sockets|stock) environment=(IoUring__Enabled=false) ;; esac
  (cd "$dir" && exec env "${environment[@]}" nice -n "$NICE" taskset -c "$cpu" "./$app" "$@") > "$logfile" 2>&1 &
  started_pid=$!
  local i
  for i in $(seq 1 150); do
    grep -q '^Listening on: ' "$logfile" && return 0
    kill -0 "$started_pid" 2>/dev/null || { cat "$logfile" >&2; die "$app exited at start"; }
    sleep 0.1
  done
  cat "$logfile" >&2; die "$app did not start"
}

# check <mode>: both sides on the transport of the mode, inbound and outbound (after some requests).
check() {
  local mode=$1 status inbound outbound connected backend_says proxy_fds backend_fds
  status=$(curl -sf "http://127.0.0.1:$PROXY_PORT/proxy/transport") || die "GET /proxy/transport failed"
  inbound=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["inbound"])' "$status")
  outbound=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["outbound"])' "$status")
  connected=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["connectedOnRings"])' "$status")
  backend_says=$(curl -sf -o /dev/null -D - "http://127.0.0.1:$PROXY_PORT/" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-backend" { print $2 }')
  proxy_fds=$(io_uring_fds "$proxy_pid"); backend_fds=$(io_uring_fds "$backend_pid")
  local ok=false
  case $mode in
    iouring) [ "$inbound" = io_uring ] && [ "$outbound" = io_uring ] && [ "$connected" -gt 0 ] && [ "$backend_says" = io_uring ] \
               && [ "$proxy_fds" -gt 0 ] && [ "$backend_fds" -gt 0 ] && ok=true ;;
    inbound) [ "$inbound" = io_uring ] && [ "$outbound" != io_uring ] && [ "$connected" -eq 0 ] && [ "$backend_says" = io_uring ] \
               && [ "$proxy_fds" -gt 0 ] && [ "$backend_fds" -gt 0 ] && ok=true ;;
    sockets|stock) [ "$inbound" = Sockets ] && [ "$outbound" != io_uring ] && [ "$connected" -eq 0 ] && [ "$backend_says" = Sockets ] \
               && [ "$proxy_fds" -eq 0 ] && [ "$backend_fds" -eq 0 ] && ok=true ;;
  esac
  $ok || die "not as mode $mode says: proxy $status, backend says '$backend_says', io_uring descriptors $proxy_fds/$backend_fds"
  echo "$connected"
}

load() { # load <connections> <seconds> <output>
  nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t1 -c "$1" -d "${2}s" --latency "http://127.0.0.1:$PROXY_PORT/" > "$3" 2>&1
}

read -r -a modes <<< "$MODES"
for mode in "${modes[@]}"; do
  case $mode in iouring|sockets|stock|inbound) ;; *) die "unknown mode '$mode' (iouring, sockets, stock, inbound)" ;; esac
done
read -r -a counts <<< "$CONNECTIONS"
highest=$(printf '%s\n' "${counts[@]}" | sort -n | tail -1)
log "$ROUNDS rounds of ${modes[*]}: ${WARMUP}s warm-up, then ${SETTLE}s + ${DURATION}s at each of ${counts[*]} connections; results in ${OUT#"$ROOT"/}"
log "load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  order=("${modes[@]}")
  if [ $(( round % 2 )) -eq 0 ]; then order=(); for (( i = ${#modes[@]} - 1; i >= 0; i-- )); do order+=("${modes[i]}"); done; fi
  for mode in "${order[@]}"; do
    start "$BACKEND_DIR" Backend "$BACKEND_CPU" "$RAW/r$round-$mode.backend.log" "$mode" --urls "http://127.0.0.1:$BACKEND_PORT"
    backend_pid=$started_pid
    proxy_args=(--urls "http://127.0.0.1:$PROXY_PORT" --ReverseProxy:Clusters:backend:Destinations:backend:Address "http://127.0.0.1:$BACKEND_PORT/")
    case $mode in stock|inbound) proxy_args+=(--ReverseProxy:Clusters:backend:Metadata:UseIoUringConnectionFactory false) ;; esac
    start "$PROXY_DIR" YarpProxy "$PROXY_CPU" "$RAW/r$round-$mode.proxy.log" "$mode" "${proxy_args[@]}"
    proxy_pid=$started_pid
    curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/" || die "the proxy does not answer"
    check "$mode" > /dev/null
    load "$highest" "$WARMUP" "$RAW/r$round-$mode.warmup"
    for conns in "${counts[@]}"; do
      attempt=0
      while true; do
        raw="$RAW/r$round-$mode-c$conns-a$attempt.txt"
        wait_quiet
        start_hogs
        load "$conns" "$SETTLE" "$raw.settle"
        p0=$(process_ticks "$proxy_pid"); b0=$(process_ticks "$backend_pid"); c0=$(children_ticks); x0=$(context_switches "$proxy_pid")
        busy_p0=$(cpu_busy "$PROXY_CPU"); busy_o0=$(cpu_busy "$BACKEND_CPU,$CLIENT_CPU"); t0=$(date +%s.%N)
        load "$conns" "$DURATION" "$raw"
        t1=$(date +%s.%N); busy_p1=$(cpu_busy "$PROXY_CPU"); busy_o1=$(cpu_busy "$BACKEND_CPU,$CLIENT_CPU")
        p1=$(process_ticks "$proxy_pid"); b1=$(process_ticks "$backend_pid"); c1=$(children_ticks); x1=$(context_switches "$proxy_pid")
        stop_hogs
        connected=$(check "$mode")
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        other=$(awk -v w="$wall" -v hz="$CLK_TCK" -v b=$((busy_p1 - busy_p0)) -v s=$((p1 - p0)) 'BEGIN { printf "%.0f", (b - s) / (w * hz) * 100 }')
        summary="$(python3 "$PERF/report.py" summary "$raw" wrk); proxy $(( (p1 - p0) * 100 / (CLK_TCK * DURATION) ))% of a core, backend $(( (b1 - b0) * 100 / (CLK_TCK * DURATION) ))%, ${other}% of the proxy's core went elsewhere; load $(cut -d' ' -f1 /proc/loadavg), waited ${waited_s}s for quiet"
        if [ "$other" -gt "$MAX_OTHER" ] && [ "$RETRIES" -gt 0 ]; then
          RETRIES=$(( RETRIES - 1 )); attempt=$(( attempt + 1 ))
          log "round $round $mode $conns connections: $summary; disturbed, measuring again"
          continue
        fi
        PYTHONPATH="$PERF" python3 - "$raw" "$round" "$mode" "$conns" $((p1 - p0)) $((b1 - b0)) $((c1 - c0)) $((busy_p1 - busy_p0)) $((busy_o1 - busy_o0)) \
            "$wall" "$connected" "$(cut -d' ' -f1 /proc/loadavg)" "$waited_s" "$attempt" $((x1 - x0)) >> "$RESULTS" <<'EOF'
import sys
from report import parse_wrk
raw, *rest = sys.argv[1:]
r = parse_wrk(open(raw).read(), pipelined=False)
round_, mode, conns, proxy, backend, client, busy_p, busy_o, wall, connected, load1, waited, attempt, switches = rest
print("\t".join(map(str, [round_, mode, conns, r["requests"], f"{r['duration_s']:.3f}", f"{r['rps']:.0f}",
    r["p50_ms"], r["p99_ms"], r["errors"], proxy, backend, client, busy_p, busy_o, wall, connected, load1, waited, attempt, switches])))
EOF
        log "round $round $mode $conns connections: $summary"
        break
      done
    done
    stop_apps
  done
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/meta.env"
echo "elapsed_s=$(( $(date +%s) - started ))" >> "$OUT/meta.env"
python3 "$PERF/proxy_report.py" "$OUT"
log "done in $(( $(date +%s) - started ))s: ${OUT#"$ROOT"/}/results.md"
cat "$OUT/results.md"
