#!/usr/bin/env bash
# Benchmarks the io_uring transport against Kestrel's Sockets transport, side by side in one run.
#
#   bash perf/run.sh
#
# Installs what a fresh Debian machine lacks (wrk, nghttp2-client for h2load, iproute2 for ss,
# python3-matplotlib for the charts), builds perf/BenchmarkApp in Release (and perf/LoadClient when
# a WebSocket scenario needs it), then for every round and scenario starts the server once per
# transport (the order alternates from round to round), warms it up, and measures. The server is
# pinned to one core and the load generator to another. Results go to perf/results/<timestamp>/
# (results.csv, results.md, chart.png for the plaintext sweep, ratios.png for the other scenarios);
# raw load-generator output goes to perf/results/tmp/<timestamp>/ (not committed).
#
# Environment (defaults in brackets):
#   DURATION [8]      seconds measured per run
#   WARMUP [20]       least seconds of the same load before each measured run; the warm-up then
#                     goes on in WARMUP_SLICE [2] s slices until the JIT compiled fewer than
#                     JIT_QUIET [50] methods in each of the last two slices, at most MAX_WARMUP [90] s.
#                     Tier-1 recompilation under load takes 15-30 s on one pinned core (the JIT's
#                     background thread shares the core with the load), and a run measured before it
#                     ends times a mix of unoptimized and optimized code
#   ROUNDS [3]        runs per scenario and transport; the report gives medians
#   SCENARIOS         space-separated; default "plaintext-16 plaintext-128 plaintext-512
#                     pipeline16-128 h2-16x10". Forms:
#                     <endpoint>-<connections> with endpoint plaintext|json|64k|1m|delay (HTTP/1.1,
#                       wrk; 64k and 1m answer 64 KiB and 1 MiB bodies from preallocated buffers,
#                       delay answers after awaiting 1 ms),
#                     pipeline<depth>-<connections> (HTTP/1.1 plaintext, wrk),
#                     h2-<connections>x<streams> (HTTP/2 plaintext, h2load),
#                     uneven<slow>-<connections> (plaintext on <connections>, measured, while <slow>
#                       other connections, opened first, keep asking for /cpu: 0.5 ms of CPU each; the
#                       CPU per request then includes theirs, so compare req/s and latency),
#                     tls-<connections> (HTTPS, HTTP/1.1 plaintext, wrk: TLS terminated by Kestrel on
#                       TLSPORT with a self-signed ECDSA P-256 certificate the app makes at start; the
#                       server opens that port only for the HTTPS scenarios),
#                     h2tls-<connections>x<streams> (HTTPS, HTTP/2 negotiated by ALPN, h2load; the
#                       run fails if h2load did not get h2),
#                     close-<connections> (HTTP/1.1 plaintext, wrk with "Connection: close": a new
#                       connection per request; the server counts the connections it accepted, and
#                       results.md gives connections/s from that count),
#                     upload-<connections> (wrk with upload.lua: every request POSTs an 8 MiB body to
#                       /upload, which reads and drops it and answers with its length; MiB/s too),
#                     ws<bytes>[k]-<connections>, e.g. ws64-16, ws16k-16 (WebSocket echo on /ws,
#                       perf/LoadClient: each connection sends a binary message and waits for the
#                       whole echo, again and again; figures per message),
#                     grpc-<connections>x<streams> (gRPC unary on the HTTP/2 port, h2load POSTing a
#                       prepared request; the server runs with --grpc true, which puts endpoint
#                       routing before every request, so these compare only with each other),
#                     grpcstream-<connections>x<streams> (gRPC server streaming: every call asks for
#                       GRPC_STREAM [100] messages; figures per message, latency per call).
#                     h2load counts a gRPC call answered 200 as a success even when its status says
#                     otherwise: report.py counts calls whose response data fell short as errors.
#                     Named sets: "sweep" = plaintext at 1, 16, 128, 512 and 4096 connections (the
#                     chart's x axis); "all" = sweep plus pipeline16-128 and h2-16x10; "apps" =
#                     tls-16 h2tls-16x10 close-16 64k-16 1m-16 upload-16 ws64-16 ws16k-16
#                     grpc-16x10 grpcstream-16x10. Above 1000 connections the open-file limit is
#                     raised for server and load generator (about two descriptors per connection),
#                     up to the hard limit
#   TRANSPORTS ["iouring sockets"]
#   DISPATCH []       io_uring connection dispatch modes to compare, e.g. "Kernel LeastConnections
#                     IncomingCpu": "iouring" in TRANSPORTS then runs once per mode, reported as
#                     iouring-<mode> (IoUring:Dispatch). Empty: the transport's default, one run
#   BASELINE []       a commit (anything git rev-parse takes) to compare this checkout's io_uring with:
#                     its perf/BenchmarkApp is built from a git worktree in perf/.baseline/ and runs as
#                     transport "baseline" (io_uring at that commit), added to TRANSPORTS and
#                     alternating with the others in every round, so a before/after comparison shares
#                     each round's conditions; results.md adds io_uring ÷ baseline rows. For example
#                     BASELINE=HEAD~1 TRANSPORTS=iouring bash perf/run.sh
#   RINGS []          IoUring:RingCount for io_uring runs (dispatch needs more than one ring; under
#                     taskset the default is one ring per CPU the server may use). Empty: default
#   INLINE [false]    UnsafePreferInlineScheduling, for both transports
#   SERVER_CPU [0], CLIENT_CPU [1]   CPU lists as taskset takes them ("0", "0,1", "0-3"). With
#                     several server CPUs, CPU figures are summed over them, and a load generator that
#                     shares one counts as disturbance: raise MAX_OTHER for such runs
#   PORT [5100], H2PORT [5101], ECHOPORT [5102], TLSPORT [5103]
#   LOADGEN [auto]    auto: Bombardier for plain HTTP/1.1 scenarios when it is on PATH, else wrk;
#                     wrk: always wrk (pipelining, HTTPS, close and upload always use wrk, HTTP/2
#                     and gRPC always h2load, WebSockets always perf/LoadClient)
#   MAX_OTHER [10]    a run is disturbed when anything but the server took more than this % of
#                     the server's core; the pair is then measured again
#   RETRIES [6]       how many disturbed pairs may be measured again in the whole run
#   NICE [0]          nice value for server and load generator (e.g. -10 on a shared machine)
#   PROFILE [0]       seconds of `perf record -F 999 -g` of the server from the start of each measured
#                     run (at most DURATION; 0: none). The server then runs with DOTNET_PerfMapEnabled=3
#                     and DOTNET_EnableWriteXorExecute=0, so JIT-compiled frames have names; perf itself
#                     runs on CLIENT_CPU. profile.py groups each run's samples and writes profile.md
#                     next to results.md; perf script's text stays in the raw folder (.perf.txt.gz).
#                     Sampling costs the server CPU: compare profiled runs with profiled runs only
set -euo pipefail

PERF=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$PERF")
# shellcheck source=perf/common.sh
. "$PERF/common.sh" # log, die, build_release
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-20}
WARMUP_SLICE=${WARMUP_SLICE:-2}
JIT_QUIET=${JIT_QUIET:-50}
MAX_WARMUP=${MAX_WARMUP:-90}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"plaintext-16 plaintext-128 plaintext-512 pipeline16-128 h2-16x10"}
TRANSPORTS=${TRANSPORTS:-"iouring sockets"}
BASELINE=${BASELINE:-}
DISPATCH=${DISPATCH:-}
RINGS=${RINGS:-}
INLINE=${INLINE:-false}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-5100}
H2PORT=${H2PORT:-5101}
ECHOPORT=${ECHOPORT:-5102}
TLSPORT=${TLSPORT:-5103}
GRPC_STREAM=${GRPC_STREAM:-100}
LOADGEN=${LOADGEN:-auto}
MAX_OTHER=${MAX_OTHER:-10}
RETRIES=${RETRIES:-6}
NICE=${NICE:-0}
PROFILE=${PROFILE:-0}


# --- tools -------------------------------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
command -v ss >/dev/null || need_apt+=(iproute2)
[ "$PROFILE" = 0 ] || command -v perf >/dev/null || need_apt+=(linux-perf)
# The chart wants matplotlib in some python3; Debian's package lands in /usr/bin/python3.
chart_python=""
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null && "$py" -c 'import matplotlib' 2>/dev/null; then chart_python=$py; break; fi
done
if [ -z "$chart_python" ]; then need_apt+=(python3-matplotlib); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need_apt[*]}"
    apt-get update -qq || true
    for pkg in "${need_apt[@]}"; do
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null || log "could not install $pkg"
    done
  else
    log "missing ${need_apt[*]}; run as root on Debian, or install them"
  fi
fi
for tool in wrk h2load taskset curl python3 ss; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
if [ "$PROFILE" != 0 ]; then
  command -v perf >/dev/null || die "PROFILE needs perf (Debian: linux-perf)"
  [ "$PROFILE" -le "$DURATION" ] || die "PROFILE ($PROFILE s) must not exceed DURATION ($DURATION s)"
fi
if [ -z "$chart_python" ]; then
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import matplotlib' 2>/dev/null; then chart_python=$py; break; fi
  done
fi
[ -n "$chart_python" ] || { chart_python=python3; log "no matplotlib: the chart will be an SVG drawn by report.py"; }
command -v dotnet >/dev/null || die "the .NET 10 SDK is required; 'dotnet' is not on PATH"
use_bombardier=false
if [ "$LOADGEN" = auto ] && command -v bombardier >/dev/null; then use_bombardier=true; fi

ncpu=$(nproc --all)
# "0,2-3" -> "0 2 3"
expand_cpus() {
  local part cpus=()
  for part in ${1//,/ }; do
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then mapfile -t -O "${#cpus[@]}" cpus < <(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
    elif [[ $part =~ ^[0-9]+$ ]]; then cpus+=("$part")
    else die "bad CPU list '$1'"; fi
  done
  echo "${cpus[*]}"
}
for cpu in $(expand_cpus "$SERVER_CPU") $(expand_cpus "$CLIENT_CPU"); do
  [ "$cpu" -lt "$ncpu" ] || die "need CPU $cpu; this machine has $ncpu"
done
for cpu in $(expand_cpus "$SERVER_CPU"); do
  [[ " $(expand_cpus "$CLIENT_CPU") " != *" $cpu "* ]] || log "warning: server and load generator share CPU $cpu"
done
ulimit -n 65536 2>/dev/null || true

# Something answering on a port would take the load instead of our server (no ss on slim images).
for p in "$PORT" "$H2PORT" "$ECHOPORT" "$TLSPORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use (set PORT, H2PORT, ECHOPORT, TLSPORT)"; fi
done

sweep=(plaintext-1 plaintext-16 plaintext-128 plaintext-512 plaintext-4096)
apps=(tls-16 h2tls-16x10 close-16 64k-16 1m-16 upload-16 ws64-16 ws16k-16 grpc-16x10 grpcstream-16x10)
scenarios=()
for name in $SCENARIOS; do
  case $name in
    sweep) scenarios+=("${sweep[@]}") ;;
    all) scenarios+=("${sweep[@]}" pipeline16-128 h2-16x10) ;;
    apps) scenarios+=("${apps[@]}") ;;
    *) scenarios+=("$name") ;;
  esac
done

# --- build -------------------------------------------------------------------------------------
# Own artifacts folder: a solution build running at the same time keeps its bin/ and obj/.
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
log "building perf/BenchmarkApp (Release)"
dotnet build "$PERF/BenchmarkApp/BenchmarkApp.csproj" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q >/dev/null \
  || { dotnet build "$PERF/BenchmarkApp/BenchmarkApp.csproj" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q | tail -30; die "build failed"; }
APP="$PERF/.artifacts/bin/BenchmarkApp/release/BenchmarkApp"
[ -x "$APP" ] || die "$APP was not built"
BASE_APP=""
if [ -n "$BASELINE" ]; then
  base_commit=$(git -C "$ROOT" rev-parse --verify "$BASELINE^{commit}") || die "BASELINE $BASELINE is no commit"
  base_tree="$PERF/.baseline/${base_commit:0:12}"
  if [ ! -d "$base_tree" ]; then
    git -C "$ROOT" worktree add --detach -f "$base_tree" "$base_commit" >/dev/null 2>&1 || die "could not check $BASELINE out into $base_tree"
  fi
  log "the baseline: $BASELINE (${base_commit:0:12}) in ${base_tree#"$ROOT"/}"
  (ROOT=$base_tree PERF=$base_tree/perf build_release perf/BenchmarkApp/BenchmarkApp.csproj) || die "baseline build failed"
  BASE_APP="$base_tree/perf/.artifacts/bin/BenchmarkApp/release/BenchmarkApp"
  [ -x "$BASE_APP" ] || die "$BASE_APP was not built"
  [[ " $TRANSPORTS " == *" baseline "* ]] || TRANSPORTS="$TRANSPORTS baseline"
fi
# The WebSocket load generator, only when a scenario needs it.
LOADCLIENT="$PERF/.artifacts/bin/LoadClient/release/LoadClient"
if printf '%s\n' "${scenarios[@]}" | grep -q '^ws'; then
  log "building perf/LoadClient (Release)"
  dotnet build "$PERF/LoadClient/LoadClient.csproj" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q >/dev/null \
    || { dotnet build "$PERF/LoadClient/LoadClient.csproj" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q | tail -30; die "build failed"; }
  [ -x "$LOADCLIENT" ] || die "$LOADCLIENT was not built"
fi

# --- output ------------------------------------------------------------------------------------
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="$PERF/results/$STAMP"
RAW="$PERF/results/tmp/$STAMP"
mkdir -p "$OUT" "$RAW"
RUNS="$RAW/runs.tsv"
printf 'round\tscenario\ttransport\tprotocol\tconnections\tdepth\tloadgen\traw\tattempt\tserver_ticks\tserver_cpu_busy_ticks\tserver_cpu_irq_ticks\tserver_cpu_steal_ticks\tclient_ticks\tclient_cpu_busy_ticks\tclient_cpu_irq_ticks\twall_s\trss_kib\n' > "$RUNS"
CLK_TCK=$(getconf CLK_TCK)
started=$(date +%s)

{
  echo "stamp=$STAMP"
  echo "kernel=$(uname -r)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "cpus=$ncpu"
  echo "memory_gib=$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)"
  echo "virtualization=$(systemd-detect-virt 2>/dev/null || echo unknown)"
  echo "dotnet_sdk=$(dotnet --version)"
  echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "h2load=$(h2load --version | awk '{print $2}')"
  echo "bombardier=$($use_bombardier && bombardier --version 2>&1 | head -1 || echo unused)"
  # Both sides of the HTTPS scenarios: .NET on Linux and wrk/h2load use the system's libssl.
  echo "openssl=$(openssl version 2>/dev/null || echo unknown)"
  echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "dirty_files=$(git -C "$ROOT" status --porcelain -- src 2>/dev/null | wc -l)"
  echo "duration_s=$DURATION"
  echo "warmup_s=$WARMUP"
  echo "warmup_until=fewer than $JIT_QUIET methods compiled in each of two ${WARMUP_SLICE} s slices, at most ${MAX_WARMUP} s"
  echo "rounds=$ROUNDS"
  echo "inline=$INLINE"
  echo "dispatch=${DISPATCH:-default}"
  echo "rings=${RINGS:-default}"
  echo "server_cpu=$SERVER_CPU"
  echo "client_cpu=$CLIENT_CPU"
  echo "nice=$NICE"
  echo "baseline=${base_commit:+${base_commit:0:12} ($BASELINE)}"
  echo "profile_s=$PROFILE"
  echo "max_other_pct=$MAX_OTHER"
  echo "clk_tck=$CLK_TCK"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$RAW/meta.env"

# --- helpers -----------------------------------------------------------------------------------
server_pid=""
cleanup() {
  [ -z "${slow_pid:-}" ] || kill "$slow_pid" 2>/dev/null || true
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# utime + stime of the whole process (every thread), in clock ticks. Fields 14 and 15 of
# /proc/<pid>/stat, counted after the parenthesised command name, which may contain spaces.
process_ticks() {
  local stat rest
  stat=$(< "/proc/$1/stat")
  rest=${stat##*) }
  read -r -a f <<< "$rest"
  echo $(( f[11] + f[12] ))
}

# utime + stime of the children this shell has waited for (fields 16 and 17): the load generator's
# CPU time, read before and after it runs in the foreground.
children_ticks() {
  local stat rest
  stat=$(< "/proc/$$/stat")
  rest=${stat##*) }
  read -r -a f <<< "$rest"
  echo $(( f[13] + f[14] ))
}

# Ticks of one CPU from /proc/stat: busy (user, nice, system, irq, softirq), of which irq and
# softirq, and steal. Ticks spent in softirq while a task runs count for that task too (here the
# per-task sums exceed user + system), so busy minus the process pinned there is what else ran:
# other processes, and softirqs that came while the core was idle. The server's core is never
# idle under load, so there it is time other processes took from the server.
cpu_ticks() {
  awk -v cpus=" $(expand_cpus "$1") " 'index(cpus, " " substr($1, 4) " ") && $1 ~ /^cpu[0-9]+$/ {
      busy += $2 + $3 + $4 + $7 + $8; irq += $7 + $8; steal += $9 }
    END { print busy, irq, steal }' /proc/stat
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# A transport is "sockets", "iouring", "iouring-<dispatch mode>" (see DISPATCH), or "baseline"
# (io_uring from the BASELINE build, dispatch and rings as for "iouring"). The scenario's
# own server options are in server_args (--tlsport for HTTPS, --grpc true for gRPC): without them the
# server runs as it did before those scenarios existed.
start_server() {
  local transport=${1%%-*} logfile=$2 options=() app=$APP
  if [ "$transport" = baseline ]; then
    [ -n "$BASE_APP" ] || die "transport baseline needs BASELINE"
    transport=iouring app=$BASE_APP
  fi
  if [ "$transport" = iouring ]; then
    [ "$1" = iouring ] || [ "$1" = baseline ] || options+=(--IoUring:Dispatch "${1#iouring-}")
    [ -z "$RINGS" ] || options+=(--IoUring:RingCount "$RINGS")
  fi
  local profiling=()
  [ "$PROFILE" = 0 ] || profiling=(DOTNET_PerfMapEnabled=3 DOTNET_EnableWriteXorExecute=0)
  # From the app's own folder: a host watches its content root (by default the working directory),
  # subfolders included, and the load generators write under perf/results/ while they run; a
  # BenchmarkApp from before it set its content root itself (a BASELINE) would watch them.
  (cd "$(dirname "$app")" && exec nice -n "$NICE" taskset -c "$SERVER_CPU" env "${profiling[@]}" "$app" --transport "$transport" --inline "$INLINE" \
    --port "$PORT" --h2port "$H2PORT" --echoport "$ECHOPORT" "${options[@]}" "${server_args[@]}") > "$logfile" 2>&1 &
  server_pid=$!
  local i
  for i in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/plaintext"; then break; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$logfile" >&2; die "server exited at start"; }
    sleep 0.1
  done
  # The app prints its line just after it starts serving: give it a moment to land in the log.
  for i in $(seq 1 50); do
    grep -q "^BenchmarkApp " "$logfile" && break
    sleep 0.1
  done
  grep -q "transport=$transport " "$logfile" || { cat "$logfile" >&2; die "server is not serving on $transport"; }
  if [ "$1" != "$transport" ] && [ "$1" != baseline ]; then
    grep -q "dispatch=${1#iouring-}\b" "$logfile" || { cat "$logfile" >&2; die "server is not dispatching with ${1#iouring-}"; }
  fi
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# load <kind> <connections> <depth> <url> <seconds> <output file>: the scenario's load generator
# pinned to CLIENT_CPU. The scenario's own options go in load_args (before the URL) and script_args
# (after it: wrk passes them to its Lua script).
load_args=()
script_args=()
load() {
  local kind=$1 conns=$2 depth=$3 url=$4 seconds=$5 out=$6
  local pinned=(nice -n "$NICE" taskset -c "$CLIENT_CPU")
  case $kind in
    bombardier)
      "${pinned[@]}" bombardier -c "$conns" -d "${seconds}s" -l -p r -o j "${load_args[@]}" "$url" > "$out" 2>&1 ;;
    wrk|wrk-pipeline)
      "${pinned[@]}" wrk -t1 -c "$conns" -d "${seconds}s" --latency "${load_args[@]}" "$url" "${script_args[@]}" > "$out" 2>&1 ;;
    h2load)
      # h2load prints no percentiles: per-request times go to a log file (see h2_percentiles).
      "${pinned[@]}" h2load -t1 -c "$conns" -m "$depth" -D "$seconds" --log-file="$out.log" "${load_args[@]}" "$url" > "$out" 2>&1 ;;
    loadclient)
      # Socket completions run on the client's epoll thread instead of hopping to its thread pool:
      # about 40 % less of the client's CPU per message here, so one core of client keeps up with
      # one core of server for longer. Exits 1 when it cannot open its connections; the output says why.
      "${pinned[@]}" env DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1 "$LOADCLIENT" --url "$url" --connections "$conns" --seconds "$seconds" "${load_args[@]}" > "$out" 2>&1 \
        || { cat "$out" >&2; die "perf/LoadClient failed"; } ;;
  esac
}

# start_slow_load <connections> <output file>: <connections> keep-alive connections asking for /cpu
# for the rest of the run, on the load generator's CPU. Returns once the server holds all of them,
# so the measured connections open after them.
slow_pid=""
start_slow_load() {
  local want=$1 i held=0
  nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t1 -c "$want" -d 3600s "http://127.0.0.1:$PORT/cpu" > "$2" 2>&1 &
  slow_pid=$!
  for i in $(seq 1 100); do
    held=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
    [ "$held" -ge "$want" ] && return 0
    sleep 0.1
  done
  die "the slow load opened $held of $want connections"
}

stop_slow_load() {
  [ -n "$slow_pid" ] || return 0
  kill "$slow_pid" 2>/dev/null || true
  wait "$slow_pid" 2>/dev/null || true
  slow_pid=""
}

jit_methods() {
  curl -sf "http://127.0.0.1:$PORT/stats" | awk '$1 == "jit.compiled_methods" { print $2 }'
}

# Connections the server's HTTP ports accepted so far, this request's own included.
connections_accepted() {
  curl -sf "http://127.0.0.1:$PORT/stats" | awk '$1 == "app.connections_accepted" { print $2 }'
}

# warm_up <kind> <connections> <depth> <url> <output file>: the load of the run, first WARMUP
# seconds, then in slices until the JIT is quiet (see WARMUP). Sets warmed_s and warm_jit (methods
# compiled in the last two slices). The /stats requests between slices are outside any measurement.
warm_up() {
  local kind=$1 conns=$2 depth=$3 url=$4 out=$5 before after previous=$JIT_QUIET delta
  load "$kind" "$conns" "$depth" "$url" "$WARMUP" "$out"
  warmed_s=$WARMUP
  before=$(jit_methods) || die "GET /stats failed during warm-up"
  while true; do
    load "$kind" "$conns" "$depth" "$url" "$WARMUP_SLICE" "$out"
    warmed_s=$(( warmed_s + WARMUP_SLICE ))
    after=$(jit_methods) || die "GET /stats failed during warm-up"
    delta=$(( after - before ))
    warm_jit="$previous+$delta"
    before=$after
    if { [ "$delta" -lt "$JIT_QUIET" ] && [ "$previous" -lt "$JIT_QUIET" ]; } || [ "$warmed_s" -ge "$MAX_WARMUP" ]; then break; fi
    previous=$delta
  done
  rm -f "$out.log"
}

# Reduces h2load's per-request log to percentiles appended to its output, outside the measured
# interval, and deletes the log (megabytes per run).
h2_percentiles() {
  if [ -f "$1.log" ]; then
    python3 "$PERF/report.py" h2-percentiles "$1.log" >> "$1"
    rm -f "$1.log"
  fi
}

# The gRPC request bodies h2load POSTs: one gRPC frame each (compressed flag 0, big-endian length,
# the message), the messages of perf/BenchmarkApp/Protos/bench.proto by hand. Every answer message
# is a Payload of "Hello, World!" (5 + 15 bytes of DATA), which report.py checks against.
GRPC_UNARY_BODY="$RAW/grpc-unary.bin"
GRPC_STREAM_BODY="$RAW/grpc-stream.bin"
GRPC_MESSAGE_BYTES=20
write_grpc_bodies() {
  python3 - "$GRPC_UNARY_BODY" "$GRPC_STREAM_BODY" "$GRPC_STREAM" <<'EOF'
import struct
import sys

def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)

def frame(message):
    return b"\0" + struct.pack(">I", len(message)) + message

hello = b"Hello, World!"
with open(sys.argv[1], "wb") as f:
    f.write(frame(b"\x0a" + varint(len(hello)) + hello))     # Payload: field 1 (body), length-delimited
with open(sys.argv[2], "wb") as f:
    f.write(frame(b"\x08" + varint(int(sys.argv[3]))))        # StreamRequest: field 1 (count), varint
EOF
}

UPLOAD_BYTES=$(( 8 << 20 ))

# scenario <name>: sets what its runs need: protocol, conns, depth (requests or streams in flight per
# connection), kind (the load generator, as report.py parses it), url, load_args, script_args,
# server_args, slow (connections of /cpu beside the measured ones) and facts (key=value lines added
# to every raw output, for report.py: the body bytes a request carries, what a gRPC call answers).
# Fails on a name it does not know.
scenario() {
  slow=0; depth=1; load_args=(); script_args=(); server_args=(); facts=()
  kind=wrk
  local http="http://127.0.0.1:$PORT" plain=wrk
  $use_bombardier && plain=bombardier
  if [[ $1 =~ ^(plaintext|json|64k|1m|delay)-([0-9]+)$ ]]; then
    protocol=http1; url="$http/${BASH_REMATCH[1]}"; conns=${BASH_REMATCH[2]}; kind=$plain
    case ${BASH_REMATCH[1]} in
      64k) facts=("body_bytes=$(( 64 << 10 ))") ;;
      1m) facts=("body_bytes=$(( 1 << 20 ))") ;;
    esac
  elif [[ $1 =~ ^uneven([0-9]+)-([0-9]+)$ ]]; then
    protocol=http1; url="$http/plaintext"; slow=${BASH_REMATCH[1]}; conns=${BASH_REMATCH[2]}; kind=$plain
  elif [[ $1 =~ ^pipeline([0-9]+)-([0-9]+)$ ]]; then
    protocol=http1; url="$http/plaintext"; depth=${BASH_REMATCH[1]}; conns=${BASH_REMATCH[2]}; kind=wrk-pipeline
    load_args=(-s "$PERF/pipeline.lua"); script_args=(-- "$depth")
  elif [[ $1 =~ ^h2-([0-9]+)x([0-9]+)$ ]]; then
    protocol=h2; url="http://127.0.0.1:$H2PORT/plaintext"; conns=${BASH_REMATCH[1]}; depth=${BASH_REMATCH[2]}; kind=h2load
  elif [[ $1 =~ ^tls-([0-9]+)$ ]]; then
    protocol=http1-tls; url="https://127.0.0.1:$TLSPORT/plaintext"; conns=${BASH_REMATCH[1]}; server_args=(--tlsport "$TLSPORT")
  elif [[ $1 =~ ^h2tls-([0-9]+)x([0-9]+)$ ]]; then
    protocol=h2-tls; url="https://127.0.0.1:$TLSPORT/plaintext"; conns=${BASH_REMATCH[1]}; depth=${BASH_REMATCH[2]}; kind=h2load
    server_args=(--tlsport "$TLSPORT")
  elif [[ $1 =~ ^close-([0-9]+)$ ]]; then
    # wrk opens a new connection when a response says "Connection: close", as Kestrel's answer to
    # this request does; the server's count of accepted connections (connections_opened) shows it.
    protocol=http1; url="$http/plaintext"; conns=${BASH_REMATCH[1]}; load_args=(-H "Connection: close")
  elif [[ $1 =~ ^upload-([0-9]+)$ ]]; then
    protocol=http1; url="$http/upload"; conns=${BASH_REMATCH[1]}
    load_args=(-s "$PERF/upload.lua"); script_args=(-- "$UPLOAD_BYTES"); facts=("body_bytes=$UPLOAD_BYTES")
  elif [[ $1 =~ ^ws([0-9]+)(k?)-([0-9]+)$ ]]; then
    local bytes=${BASH_REMATCH[1]}
    [ -z "${BASH_REMATCH[2]}" ] || bytes=$(( bytes << 10 ))
    protocol=websocket; url="ws://127.0.0.1:$PORT/ws"; conns=${BASH_REMATCH[3]}; kind=loadclient
    load_args=(--size "$bytes")
  elif [[ $1 =~ ^grpc(stream)?-([0-9]+)x([0-9]+)$ ]]; then
    protocol=grpc; conns=${BASH_REMATCH[2]}; depth=${BASH_REMATCH[3]}; kind=h2load; server_args=(--grpc true)
    local messages=1 body=$GRPC_UNARY_BODY call=Unary
    if [ -n "${BASH_REMATCH[1]}" ]; then messages=$GRPC_STREAM; body=$GRPC_STREAM_BODY; call=ServerStream; fi
    url="http://127.0.0.1:$H2PORT/bench.Bench/$call"
    load_args=(-d "$body" -H "content-type: application/grpc" -H "te: trailers")
    facts=("grpc_messages_per_call=$messages" "grpc_data_bytes_per_call=$(( messages * GRPC_MESSAGE_BYTES ))")
  else
    die "unknown scenario '$1'"
  fi
}

# Checks on the warm-up's output that the scenario ran as it says, before anything is measured.
check_scenario() {
  local out=$2
  case $1 in
    h2tls-*)
      grep -q '^Application protocol: h2$' "$out" \
        || die "h2load did not negotiate h2 over TLS: $(grep -m1 'Application protocol' "$out" || tail -3 "$out")" ;;
  esac
}

# --- runs --------------------------------------------------------------------------------------
read -r -a transports <<< "$TRANSPORTS"
if [ -n "$DISPATCH" ]; then
  expanded=()
  for transport in "${transports[@]}"; do
    if [ "$transport" = iouring ]; then
      for mode in $DISPATCH; do expanded+=("iouring-$mode"); done
    else
      expanded+=("$transport")
    fi
  done
  transports=("${expanded[@]}")
fi
# Every name known before the first run.
for name in "${scenarios[@]}"; do scenario "$name"; done
write_grpc_bodies
# Server and load generator each hold one descriptor per connection, plus the runtime's own.
max_conns=$(printf '%s\n' "${scenarios[@]}" | grep -Eo '[0-9]+(x[0-9]+)?$' | sed 's/x.*//' | sort -n | tail -1)
need_fds=$(( ${max_conns:-0} * 2 + 1024 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
  ulimit -n "$need_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need_fds" ] \
    || die "$max_conns connections need $need_fds open files; the hard limit is $(ulimit -Hn)"
fi
total=$(( ROUNDS * ${#scenarios[@]} * ${#transports[@]} ))
n=0
log "$total runs of ${WARMUP}-${MAX_WARMUP}s warm-up (until the JIT is quiet) + ${DURATION}s measured; results in ${OUT#"$ROOT"/}"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which transport goes first, so neither always runs on a cooler or warmer machine.
  order=("${transports[@]}")
  if [ $(( round % 2 )) -eq 0 ]; then
    order=(); for (( i = ${#transports[@]} - 1; i >= 0; i-- )); do order+=("${transports[i]}"); done
  fi
  for name in "${scenarios[@]}"; do
    scenario "$name"
    # Both transports back to back; if anything else took a core meanwhile, measure the pair again.
    attempt=0
    while true; do
      pair=""
      disturbed=""
      for transport in "${order[@]}"; do
        raw="$RAW/r$round-$name-$transport-a$attempt.txt"
        start_server "$transport" "$raw.server.log"
        [ "$slow" -eq 0 ] || start_slow_load "$slow" "$raw.slow"
        warm_up "$kind" "$conns" "$depth" "$url" "$raw.warmup"
        check_scenario "$name" "$raw.warmup"
        accepted0=$(connections_accepted) || die "GET /stats failed"
        read -r server_busy0 server_irq0 server_steal0 < <(cpu_ticks "$SERVER_CPU")
        read -r client_busy0 client_irq0 _ < <(cpu_ticks "$CLIENT_CPU")
        ticks0=$(process_ticks "$server_pid")
        client0=$(children_ticks)
        t0=$(date +%s.%N)
        # Halfway through, one /stats request reads how the rings share the connections (io_uring).
        rings_pid=""
        if [ "${transport%%-*}" = iouring ] || [ "$transport" = baseline ]; then
          (sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
           curl -sf "http://127.0.0.1:$PORT/stats" \
             | awk '$1 ~ /^iouring\.connections\.active\[/ { printf "%s%s", sep, $2; sep = "/" }' > "$raw.rings") &
          rings_pid=$!
        fi
        perf_pid=""
        if [ "$PROFILE" != 0 ]; then
          taskset -c "$CLIENT_CPU" perf record -q -F 999 -g -o "$raw.perf.data" -p "$server_pid" -- sleep "$PROFILE" > "$raw.perf.log" 2>&1 &
          perf_pid=$!
        fi
        load "$kind" "$conns" "$depth" "$url" "$DURATION" "$raw"
        t1=$(date +%s.%N)
        client1=$(children_ticks)
        ticks1=$(process_ticks "$server_pid")
        read -r client_busy1 client_irq1 _ < <(cpu_ticks "$CLIENT_CPU")
        read -r server_busy1 server_irq1 server_steal1 < <(cpu_ticks "$SERVER_CPU")
        rss=$(rss_kib "$server_pid")
        if [ -n "$rings_pid" ]; then
          wait "$rings_pid" || true
          printf '%s\t%s\t%s\t%s\n' "$round" "$name" "$transport" "$(cat "$raw.rings" 2>/dev/null || echo '?')" >> "$RAW/rings.tsv"
        fi
        kill -0 "$server_pid" 2>/dev/null || { cat "$raw.server.log" >&2; die "server died during $name on $transport"; }
        # The load's connections: all accepted since the reading before it, less that reading's own
        # connection (counted in it), this one's, and the ring count's halfway through.
        accepted1=$(connections_accepted) || die "GET /stats failed"
        [ -z "$perf_pid" ] || wait "$perf_pid" || log "perf record failed: $(tail -3 "$raw.perf.log")"
        profiled_pid=$server_pid
        stop_slow_load
        stop_server
        h2_percentiles "$raw"
        if [ -n "$perf_pid" ]; then
          # After the server exited (its perf map stays behind) and outside the measured window.
          perf script -i "$raw.perf.data" -F comm,tid,ip,sym,dso 2>> "$raw.perf.log" > "$raw.perf.txt" \
            && python3 "$PERF/profile.py" fold "$raw.perf.txt" "$raw.profile.json" \
            || log "could not read the profile of $raw"
          # The samples stay, compressed, with the raw output (perf script's text, for a closer look).
          gzip -f "$raw.perf.txt" 2>/dev/null || true
          rm -f "$raw.perf.data" "/tmp/perf-$profiled_pid.map" "/tmp/perfinfo-$profiled_pid.map"
        fi
        own=1; [ -z "$rings_pid" ] || own=2
        printf '%s\n' "connections_opened=$(( accepted1 - accepted0 - own ))" "${facts[@]}" >> "$raw"
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        server_ticks=$(( ticks1 - ticks0 )); server_busy=$(( server_busy1 - server_busy0 ))
        client_ticks=$(( client1 - client0 )); client_busy=$(( client_busy1 - client_busy0 ))
        pair+=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$name" "$transport" \
          "$protocol" "$conns" "$depth" "$kind" "$(basename "$raw")" "$attempt" "$server_ticks" "$server_busy" \
          $(( server_irq1 - server_irq0 )) $(( server_steal1 - server_steal0 )) "$client_ticks" "$client_busy" \
          $(( client_irq1 - client_irq0 )) "$wall" "$rss")$'\n'
        other=$(awk -v w="$wall" -v hz="$CLK_TCK" -v b="$server_busy" -v s="$server_ticks" 'BEGIN { printf "%.0f", (b - s) / (w * hz) * 100 }')
        if [ "$other" -gt "$MAX_OTHER" ]; then
          disturbed+=" $transport (something else took ${other}% of the server's core)"
        fi
        n=$(( n + 1 ))
        log "[$n/$total] round $round $name $transport: $(python3 "$PERF/report.py" summary "$raw" "$kind" "$name") (warm-up ${warmed_s}s, JIT compiled $warm_jit in the last two slices)"
      done
      if [ -z "$disturbed" ]; then break; fi
      if [ "$RETRIES" -le 0 ]; then
        log "disturbed:$disturbed; no retries left, kept (results.md counts it)"
        break
      fi
      RETRIES=$(( RETRIES - 1 )); attempt=$(( attempt + 1 )); total=$(( total + ${#order[@]} ))
      log "disturbed:$disturbed; measuring the pair again"
    done
    printf '%s' "$pair" >> "$RUNS"
  done
done

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RAW/meta.env"
echo "elapsed_s=$(( $(date +%s) - started ))" >> "$RAW/meta.env"
"$chart_python" "$PERF/report.py" build "$RAW" "$OUT"
[ "$PROFILE" = 0 ] || python3 "$PERF/profile.py" report "$RAW" "$OUT" || log "profile.py report failed"
log "done in $(( $(date +%s) - started ))s: ${OUT#"$ROOT"/}/results.md"
cat "$OUT/results.md"
