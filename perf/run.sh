#!/usr/bin/env bash
# Benchmarks the io_uring transport against Kestrel's Sockets transport, side by side in one run.
#
#   bash perf/run.sh
#
# Installs what a fresh Debian machine lacks (wrk, nghttp2-client for h2load, iproute2 for ss,
# python3-matplotlib for the chart), builds perf/BenchmarkApp in Release, then for every round and
# scenario starts the server once per transport (the order alternates from round to round), warms
# it up, and measures. The server is pinned to one core and the load generator to another. Results
# go to perf/results/<timestamp>/ (results.csv, results.md, chart.png); raw load-generator output goes
# to perf/results/tmp/<timestamp>/ (not committed).
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
#                     pipeline16-128 h2-16x10". Forms: <endpoint>-<connections> with endpoint
#                     plaintext|json|64k|delay (HTTP/1.1; delay answers after awaiting 1 ms),
#                     pipeline<depth>-<connections> (HTTP/1.1 plaintext, wrk),
#                     h2-<connections>x<streams> (HTTP/2 plaintext, h2load),
#                     uneven<slow>-<connections> (plaintext on <connections>, measured, while <slow>
#                     other connections, opened first, keep asking for /cpu: 0.5 ms of CPU each; the
#                     CPU per request then includes theirs, so compare req/s and latency).
#                     Named sets: "sweep" = plaintext at 1, 16, 128, 512 and 4096 connections (the
#                     chart's x axis); "all" = sweep plus pipeline16-128 and h2-16x10. Above 1000
#                     connections the open-file limit is raised for server and load generator
#                     (about two descriptors per connection), up to the hard limit
#   TRANSPORTS ["iouring sockets"]
#   DISPATCH []       io_uring connection dispatch modes to compare, e.g. "Kernel LeastConnections
#                     IncomingCpu": "iouring" in TRANSPORTS then runs once per mode, reported as
#                     iouring-<mode> (IoUring:Dispatch). Empty: the transport's default, one run
#   RINGS []          IoUring:RingCount for io_uring runs (dispatch needs more than one ring; under
#                     taskset the default is one ring per CPU the server may use). Empty: default
#   INLINE [false]    UnsafePreferInlineScheduling, for both transports
#   SERVER_CPU [0], CLIENT_CPU [1]   CPU lists as taskset takes them ("0", "0,1", "0-3"). With
#                     several server CPUs, CPU figures are summed over them, and a load generator that
#                     shares one counts as disturbance: raise MAX_OTHER for such runs
#   PORT [5100], H2PORT [5101], ECHOPORT [5102]
#   LOADGEN [auto]    auto: Bombardier for plain HTTP/1.1 scenarios when it is on PATH, else wrk;
#                     wrk: always wrk (pipelining always uses wrk, HTTP/2 always h2load)
#   MAX_OTHER [10]    a run is disturbed when anything but the server took more than this % of
#                     the server's core; the pair is then measured again
#   RETRIES [6]       how many disturbed pairs may be measured again in the whole run
#   NICE [0]          nice value for server and load generator (e.g. -10 on a shared machine)
set -euo pipefail

PERF=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$PERF")
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-20}
WARMUP_SLICE=${WARMUP_SLICE:-2}
JIT_QUIET=${JIT_QUIET:-50}
MAX_WARMUP=${MAX_WARMUP:-90}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"plaintext-16 plaintext-128 plaintext-512 pipeline16-128 h2-16x10"}
TRANSPORTS=${TRANSPORTS:-"iouring sockets"}
DISPATCH=${DISPATCH:-}
RINGS=${RINGS:-}
INLINE=${INLINE:-false}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-5100}
H2PORT=${H2PORT:-5101}
ECHOPORT=${ECHOPORT:-5102}
LOADGEN=${LOADGEN:-auto}
MAX_OTHER=${MAX_OTHER:-10}
RETRIES=${RETRIES:-6}
NICE=${NICE:-0}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3)
command -v ss >/dev/null || need_apt+=(iproute2)
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
  local part out=()
  for part in ${1//,/ }; do
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then out+=($(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"))
    elif [[ $part =~ ^[0-9]+$ ]]; then out+=("$part")
    else die "bad CPU list '$1'"; fi
  done
  echo "${out[*]}"
}
for cpu in $(expand_cpus "$SERVER_CPU") $(expand_cpus "$CLIENT_CPU"); do
  [ "$cpu" -lt "$ncpu" ] || die "need CPU $cpu; this machine has $ncpu"
done
for cpu in $(expand_cpus "$SERVER_CPU"); do
  [[ " $(expand_cpus "$CLIENT_CPU") " != *" $cpu "* ]] || log "warning: server and load generator share CPU $cpu"
done
ulimit -n 65536 2>/dev/null || true

# Something answering on a port would take the load instead of our server (no ss on slim images).
for p in "$PORT" "$H2PORT" "$ECHOPORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use (set PORT, H2PORT, ECHOPORT)"; fi
done

# --- build -------------------------------------------------------------------------------------
# Own artifacts folder: a solution build running at the same time keeps its bin/ and obj/.
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
log "building perf/BenchmarkApp (Release)"
dotnet build "$PERF/BenchmarkApp/BenchmarkApp.csproj" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q >/dev/null \
  || { dotnet build "$PERF/BenchmarkApp/BenchmarkApp.csproj" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q | tail -30; die "build failed"; }
APP="$PERF/.artifacts/bin/BenchmarkApp/release/BenchmarkApp"
[ -x "$APP" ] || die "$APP was not built"

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

# A transport is "sockets", "iouring", or "iouring-<dispatch mode>" (see DISPATCH).
start_server() {
  local transport=${1%%-*} logfile=$2 options=()
  if [ "$transport" = iouring ]; then
    [ "$1" = iouring ] || options+=(--IoUring:Dispatch "${1#iouring-}")
    [ -z "$RINGS" ] || options+=(--IoUring:RingCount "$RINGS")
  fi
  nice -n "$NICE" taskset -c "$SERVER_CPU" "$APP" --transport "$transport" --inline "$INLINE" \
    --port "$PORT" --h2port "$H2PORT" --echoport "$ECHOPORT" "${options[@]}" > "$logfile" 2>&1 &
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
  if [ "$1" != "$transport" ]; then
    grep -q "dispatch=${1#iouring-}\b" "$logfile" || { cat "$logfile" >&2; die "server is not dispatching with ${1#iouring-}"; }
  fi
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# load <kind> <connections> <depth> <path> <seconds> <output file>
load() {
  local kind=$1 conns=$2 depth=$3 path=$4 seconds=$5 out=$6
  case $kind in
    bombardier)
      nice -n "$NICE" taskset -c "$CLIENT_CPU" bombardier -c "$conns" -d "${seconds}s" -l -p r -o j \
        "http://127.0.0.1:$PORT$path" > "$out" 2>&1 ;;
    wrk)
      nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t1 -c "$conns" -d "${seconds}s" --latency \
        "http://127.0.0.1:$PORT$path" > "$out" 2>&1 ;;
    wrk-pipeline)
      nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t1 -c "$conns" -d "${seconds}s" --latency -s "$PERF/pipeline.lua" \
        "http://127.0.0.1:$PORT$path" -- "$depth" > "$out" 2>&1 ;;
    h2load)
      # h2load prints no percentiles: per-request times go to a log file (see h2_percentiles).
      nice -n "$NICE" taskset -c "$CLIENT_CPU" h2load -t1 -c "$conns" -m "$depth" -D "$seconds" --log-file="$out.log" \
        "http://127.0.0.1:$H2PORT$path" > "$out" 2>&1 ;;
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

# warm_up <kind> <connections> <depth> <path> <output file>: the load of the run, first WARMUP
# seconds, then in slices until the JIT is quiet (see WARMUP). Sets warmed_s and warm_jit (methods
# compiled in the last two slices). The /stats requests between slices are outside any measurement.
warm_up() {
  local kind=$1 conns=$2 depth=$3 path=$4 out=$5 before after previous=$JIT_QUIET delta
  load "$kind" "$conns" "$depth" "$path" "$WARMUP" "$out"
  warmed_s=$WARMUP
  before=$(jit_methods) || die "GET /stats failed during warm-up"
  while true; do
    load "$kind" "$conns" "$depth" "$path" "$WARMUP_SLICE" "$out"
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
sweep=(plaintext-1 plaintext-16 plaintext-128 plaintext-512 plaintext-4096)
scenarios=()
for scenario in $SCENARIOS; do
  case $scenario in
    sweep) scenarios+=("${sweep[@]}") ;;
    all) scenarios+=("${sweep[@]}" pipeline16-128 h2-16x10) ;;
    *) scenarios+=("$scenario") ;;
  esac
done
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
  for scenario in "${scenarios[@]}"; do
    slow=0
    if [[ $scenario =~ ^(plaintext|json|64k|delay)-([0-9]+)$ ]]; then
      protocol=http1; path="/${BASH_REMATCH[1]}"; conns=${BASH_REMATCH[2]}; depth=1
      kind=wrk; $use_bombardier && kind=bombardier
    elif [[ $scenario =~ ^uneven([0-9]+)-([0-9]+)$ ]]; then
      protocol=http1; path=/plaintext; slow=${BASH_REMATCH[1]}; conns=${BASH_REMATCH[2]}; depth=1
      kind=wrk; $use_bombardier && kind=bombardier
    elif [[ $scenario =~ ^pipeline([0-9]+)-([0-9]+)$ ]]; then
      protocol=http1; path=/plaintext; depth=${BASH_REMATCH[1]}; conns=${BASH_REMATCH[2]}; kind=wrk-pipeline
    elif [[ $scenario =~ ^h2-([0-9]+)x([0-9]+)$ ]]; then
      protocol=h2; path=/plaintext; conns=${BASH_REMATCH[1]}; depth=${BASH_REMATCH[2]}; kind=h2load
    else
      die "unknown scenario '$scenario'"
    fi
    # Both transports back to back; if anything else took a core meanwhile, measure the pair again.
    attempt=0
    while true; do
      pair=""
      disturbed=""
      for transport in "${order[@]}"; do
        raw="$RAW/r$round-$scenario-$transport-a$attempt.txt"
        start_server "$transport" "$raw.server.log"
        [ "$slow" -eq 0 ] || start_slow_load "$slow" "$raw.slow"
        warm_up "$kind" "$conns" "$depth" "$path" "$raw.warmup"
        read -r server_busy0 server_irq0 server_steal0 < <(cpu_ticks "$SERVER_CPU")
        read -r client_busy0 client_irq0 _ < <(cpu_ticks "$CLIENT_CPU")
        ticks0=$(process_ticks "$server_pid")
        client0=$(children_ticks)
        t0=$(date +%s.%N)
        # Halfway through, one /stats request reads how the rings share the connections (io_uring).
        rings_pid=""
        if [ "${transport%%-*}" = iouring ]; then
          (sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
           curl -sf "http://127.0.0.1:$PORT/stats" \
             | awk '$1 ~ /^iouring\.connections\.active\[/ { printf "%s%s", sep, $2; sep = "/" }' > "$raw.rings") &
          rings_pid=$!
        fi
        load "$kind" "$conns" "$depth" "$path" "$DURATION" "$raw"
        t1=$(date +%s.%N)
        client1=$(children_ticks)
        ticks1=$(process_ticks "$server_pid")
        read -r client_busy1 client_irq1 _ < <(cpu_ticks "$CLIENT_CPU")
        read -r server_busy1 server_irq1 server_steal1 < <(cpu_ticks "$SERVER_CPU")
        rss=$(rss_kib "$server_pid")
        if [ -n "$rings_pid" ]; then
          wait "$rings_pid" || true
          printf '%s\t%s\t%s\t%s\n' "$round" "$scenario" "$transport" "$(cat "$raw.rings" 2>/dev/null || echo '?')" >> "$RAW/rings.tsv"
        fi
        kill -0 "$server_pid" 2>/dev/null || { cat "$raw.server.log" >&2; die "server died during $scenario on $transport"; }
        stop_slow_load
        stop_server
        h2_percentiles "$raw"
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        server_ticks=$(( ticks1 - ticks0 )); server_busy=$(( server_busy1 - server_busy0 ))
        client_ticks=$(( client1 - client0 )); client_busy=$(( client_busy1 - client_busy0 ))
        pair+=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$scenario" "$transport" \
          "$protocol" "$conns" "$depth" "$kind" "$(basename "$raw")" "$attempt" "$server_ticks" "$server_busy" \
          $(( server_irq1 - server_irq0 )) $(( server_steal1 - server_steal0 )) "$client_ticks" "$client_busy" \
          $(( client_irq1 - client_irq0 )) "$wall" "$rss")$'\n'
        other=$(awk -v w="$wall" -v hz="$CLK_TCK" -v b="$server_busy" -v s="$server_ticks" 'BEGIN { printf "%.0f", (b - s) / (w * hz) * 100 }')
        if [ "$other" -gt "$MAX_OTHER" ]; then
          disturbed+=" $transport (something else took ${other}% of the server's core)"
        fi
        n=$(( n + 1 ))
        log "[$n/$total] round $round $scenario $transport: $(python3 "$PERF/report.py" summary "$raw" "$kind") (warm-up ${warmed_s}s, JIT compiled $warm_jit in the last two slices)"
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
log "done in $(( $(date +%s) - started ))s: ${OUT#"$ROOT"/}/results.md"
cat "$OUT/results.md"
