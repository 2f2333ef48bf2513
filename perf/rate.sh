#!/usr/bin/env bash
# Latency at a fixed request rate, both transports in one run, alternating: coordinated omission
# cannot hide a stall here (perf/RateClient/Program.cs says why), and the chart shows the whole
# distribution, p50 to p99.99.
#
#   bash perf/rate.sh
#
# Builds perf/BenchmarkApp and perf/RateClient in Release into perf/.artifacts/, then:
#   1. finds Sockets' maximum: the server on Sockets, warmed up, wrk at CONNECTIONS for 8 s
#      (closed loop, as perf/run.sh); the rate is RATE_FRACTION of that
#   2. for every round, starts the server once per transport (the order alternates from round to
#      round), warms it up with wrk, then RateClient sends plaintext requests at that rate on
#      CONNECTIONS connections for DURATION seconds (after 2 s not counted), and the server's CPU
#      time per request is read from /proc
# Results: perf/results/rate-<UTC time>/ (results.tsv: every run; percentiles-<round>-<transport>.tsv:
# each run's distribution; results.md: medians and ratios; latency.png: the distributions).
#
# Environment (defaults in brackets):
#   ROUNDS [3], DURATION [15] seconds measured, WARMUP [20] seconds of wrk before each measurement
#   CONNECTIONS [16], RATE_FRACTION [0.5], RATE [] (a fixed rate instead of the fraction)
#   SERVER_CPU [0], CLIENT_CPU [1]   as perf/run.sh; unpinned as its README's "Unpinned":
#                                    SERVER_CPU=0,1 CLIENT_CPU=1
#   TRANSPORTS ["iouring sockets"], PORT [5100], NICE [0]
set -euo pipefail

PERF=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$PERF")
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-20}
CONNECTIONS=${CONNECTIONS:-16}
RATE_FRACTION=${RATE_FRACTION:-0.5}
RATE=${RATE:-}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TRANSPORTS=${TRANSPORTS:-"iouring sockets"}
PORT=${PORT:-5100}
NICE=${NICE:-0}

# shellcheck source=perf/common.sh
. "$PERF/common.sh"

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
# The chart needs matplotlib; Debian's package installs it for the system's python3, which may not
# be the python3 first on PATH (a pyenv one, say): the report runs with whichever has it.
has_matplotlib() { "$1" -c 'import matplotlib' 2>/dev/null; }
has_matplotlib python3 || has_matplotlib /usr/bin/python3 || need_apt+=(python3-matplotlib)
install_missing "${need_apt[@]}"
require wrk taskset curl python3 dotnet
REPORT_PYTHON=python3
if ! has_matplotlib python3 && has_matplotlib /usr/bin/python3; then REPORT_PYTHON=/usr/bin/python3; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is in use (set PORT)"; fi

build_release perf/BenchmarkApp/BenchmarkApp.csproj perf/RateClient/RateClient.csproj
APP="$PERF/.artifacts/bin/BenchmarkApp/release/BenchmarkApp"
CLIENT="$PERF/.artifacts/bin/RateClient/release/RateClient"

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="$PERF/results/rate-$STAMP"
RAW="$PERF/results/tmp/rate-$STAMP"
mkdir -p "$OUT" "$RAW"
CLK_TCK=$(getconf CLK_TCK)

server_pid=""
start_server() {
  nice -n "$NICE" taskset -c "$SERVER_CPU" "$APP" --transport "$1" --inline false \
    --port "$PORT" --h2port $((PORT + 1)) --echoport $((PORT + 2)) > "$2" 2>&1 &
  server_pid=$!
  local i
  for i in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/plaintext" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$2" >&2; die "server exited at start"; }
    sleep 0.1
  done
  for i in $(seq 1 50); do grep -q "^BenchmarkApp " "$2" && break; sleep 0.1; done
  grep -q "transport=$1 " "$2" || { cat "$2" >&2; die "server is not serving on $1"; }
}
stop_server() {
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM
# v <key>: a value from the RateClient output in $out.
v() { awk -F= -v k="$1" '$1 == k { print $2 }' "$out"; }
warm() { nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t1 -c "$CONNECTIONS" -d "${1}s" "http://127.0.0.1:$PORT/plaintext" > "$2" 2>&1; }

if [ -z "$RATE" ]; then
  log "Sockets' maximum: warm-up ${WARMUP} s, then 8 s of wrk at $CONNECTIONS connections"
  start_server sockets "$RAW/max-server.log"
  warm "$WARMUP" "$RAW/max-warmup.txt"
  warm 8 "$RAW/max.txt"
  stop_server
  max=$(awk '/^Requests\/sec:/ { print $2 }' "$RAW/max.txt")
  [ -n "$max" ] || die "wrk gave no rate: $(cat "$RAW/max.txt")"
  RATE=$(python3 -c "print(round($max * $RATE_FRACTION))")
  log "Sockets' maximum $max req/s: measuring at $RATE req/s"
fi

{
  echo "stamp=$STAMP"
  echo "kernel=$(uname -r)"
  echo "cpus=$(nproc --all)"
  echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "rounds=$ROUNDS"
  echo "duration_s=$DURATION"
  echo "warmup_s=$WARMUP"
  echo "connections=$CONNECTIONS"
  echo "sockets_max_rps=${max:-}"
  echo "rate_fraction=$([ -n "${max:-}" ] && echo "$RATE_FRACTION")"
  echo "rate=$RATE"
  echo "server_cpu=$SERVER_CPU"
  echo "client_cpu=$CLIENT_CPU"
} > "$OUT/meta.env"
RESULTS="$OUT/results.tsv"
printf 'round\ttransport\trequests\tseconds\trate\tp50_ms\tp90_ms\tp99_ms\tp999_ms\tp9999_ms\tmax_ms\tmax_backlog\terrors\tserver_cpu_us_per_req\n' > "$RESULTS"

read -r -a transports <<< "$TRANSPORTS"
for round in $(seq 1 "$ROUNDS"); do
  order=("${transports[@]}")
  if (( round % 2 == 0 )); then order=(); for (( i = ${#transports[@]} - 1; i >= 0; i-- )); do order+=("${transports[i]}"); done; fi
  for transport in "${order[@]}"; do
    log "round $round $transport: warm-up ${WARMUP} s, then $RATE req/s for ${DURATION} s"
    start_server "$transport" "$RAW/server-$round-$transport.log"
    warm "$WARMUP" "$RAW/warmup-$round-$transport.txt"
    before=$(process_ticks "$server_pid")
    nice -n "$NICE" taskset -c "$CLIENT_CPU" "$CLIENT" --port "$PORT" --path /plaintext --connections "$CONNECTIONS" \
      --rate "$RATE" --seconds "$DURATION" --warmup 2 --percentiles "$OUT/percentiles-$round-$transport.tsv" > "$RAW/rate-$round-$transport.txt"
    after=$(process_ticks "$server_pid")
    stop_server
    out="$RAW/rate-$round-$transport.txt"
    requests=$(v requests)
    cpu=$(python3 -c "print(f'{($after - $before) / $CLK_TCK * 1e6 / max($requests, 1) * $(v seconds) / ($DURATION + 2):.2f}')")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$transport" "$requests" "$(v seconds)" "$(v rate)" \
      "$(v p50_ms)" "$(v p90_ms)" "$(v p99_ms)" "$(v p999_ms)" "$(v p9999_ms)" "$(v max_ms)" "$(v max_backlog)" "$(v errors)" "$cpu" >> "$RESULTS"
    log "  $(tr '\n' ' ' < "$out")"
  done
done

"$REPORT_PYTHON" "$PERF/rate_report.py" "$OUT"
cat "$OUT/results.md"
