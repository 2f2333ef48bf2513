#!/usr/bin/env bash
# The kernel event loop against the user-space loop, in a Linux 7.2 virtual machine
# (scripts/kernel-vm.sh; software emulation here, so counts are the firm figures and times are
# marked as emulated). Same VM, modes alternating, several rounds; per run it counts, over the
# measured load only: requests, io_uring_enter calls (returns to user space), CQEs handled in
# user space, completions the kernel loop held for a later return, the server's context switches
# (all its threads, and the ring thread's own) and its CPU time.
#
#   bash perf/kernel-loop.sh                 # builds perf/BenchmarkApp, boots 7.2, writes results
#   ROUNDS=3 DURATION=5 bash perf/kernel-loop.sh
#
# Scenarios (wrk against /plaintext, one ring): 16 and 128 keep-alive connections, 128 pipelined
# x16, and a new connection per request (Connection: close, 16 at a time).
# Results: perf/results/kernel-loop-<time>/results.tsv and results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5}
MODES=${MODES:-"Off Required"}
SCENARIOS=${SCENARIOS:-"c16 c128 pipeline16-128 close16"}
PORT=${PORT:-5100}

if [ "${1:-}" = --guest ]; then
  # Inside the VM: the measurements themselves.
  APP=perf/.artifacts/bin/BenchmarkApp/release/BenchmarkApp
  out=$2
  stat() { curl -sf "http://127.0.0.1:$PORT/stats" | awk -v k="$1" '$1 == k { print $2 }'; }
  ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }
  cputicks() { awk '{ print $14 + $15 }' /proc/"$1"/stat; }
  ringctxsw() { # the ring thread's own (its name is "io_uring ring 0")
    local t; for t in /proc/"$1"/task/*; do
      [ "$(cat "$t/comm" 2>/dev/null)" = "io_uring ring 0" ] && awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' "$t/status"
    done; true; }
  printf 'round\tmode\tscenario\trequests\tenters\tcompletions\tdeferred\tcontext_switches\tring_context_switches\tcpu_ticks\tticks_per_second\n' > "$out"
  for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
      for mode in $MODES; do
        IoUring__KernelEventLoop=$mode IoUring__RingCount=1 "$APP" --transport iouring --port "$PORT" --h2port $((PORT + 1)) --echoport $((PORT + 2)) > /tmp/kernel-loop-app.log 2>&1 &
        pid=$!
        for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/plaintext" && break; sleep 0.1; done
        curl -sf -o /dev/null "http://127.0.0.1:$PORT/plaintext" || { cat /tmp/kernel-loop-app.log >&2; exit 1; }
        case $scenario in
          c16) args=(-t1 -c16) ;;
          c128) args=(-t1 -c128) ;;
          pipeline16-128) args=(-t1 -c128 -s perf/pipeline.lua) ;;
          close16) args=(-t1 -c16 -H "Connection: close") ;;
          *) echo "unknown scenario $scenario" >&2; exit 2 ;;
        esac
        wrk "${args[@]}" -d1s "http://127.0.0.1:$PORT/plaintext" > /dev/null # warm-up: JIT, connections
        e0=$(stat iouring.enters); q0=$(stat iouring.completions); d0=$(stat iouring.kernel_loop.deferred); s0=$(ctxsw "$pid"); r0=$(ringctxsw "$pid"); t0=$(cputicks "$pid")
        requests=$(wrk "${args[@]}" -d"${DURATION}s" "http://127.0.0.1:$PORT/plaintext" | awk '/requests in/ { print $1 }')
        e1=$(stat iouring.enters); q1=$(stat iouring.completions); d1=$(stat iouring.kernel_loop.deferred); s1=$(ctxsw "$pid"); r1=$(ringctxsw "$pid"); t1=$(cputicks "$pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        # The two /stats requests between the snapshots are part of the counts: two of thousands.
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$scenario" "$requests" $((e1 - e0)) $((q1 - q0)) $((${d1:-0} - ${d0:-0})) $((s1 - s0)) $((r1 - r0)) $((t1 - t0)) "$(getconf CLK_TCK)" >> "$out"
        echo "round $round $scenario $mode: $requests requests, $((e1 - e0)) enters, $((q1 - q0)) completions, $((${d1:-0} - ${d0:-0})) held" >&2
      done
    done
  done
  exit 0
fi

for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "perf/kernel-loop.sh: $tool is required (apt-get install $tool)" >&2; exit 1; }
done
dotnet build perf/BenchmarkApp/BenchmarkApp.csproj -c Release --artifacts-path perf/.artifacts -nologo -v q > /dev/null
dir=perf/results/kernel-loop-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$dir"
start=$SECONDS
ROUNDS=$ROUNDS DURATION=$DURATION MODES=$MODES SCENARIOS=$SCENARIOS PORT=$PORT \
  bash scripts/kernel-vm.sh --kernel 7.2 --timeout 3600 -- bash perf/kernel-loop.sh --guest "$dir/results.tsv"
python3 - "$dir" "$(git rev-parse --short HEAD)" $((SECONDS - start)) <<'EOF'
import csv, statistics, sys
from collections import defaultdict
d, commit, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
rows = list(csv.DictReader(open(f"{d}/results.tsv"), delimiter="\t"))
per = defaultdict(lambda: defaultdict(list))
for r in rows:
    n = int(r["requests"])
    if n == 0:
        continue
    m = per[r["scenario"]][r["mode"]]
    m.append({k: int(r[k]) / n for k in ("enters", "completions", "deferred", "context_switches", "ring_context_switches")} | {"cpu_us": int(r["cpu_ticks"]) / int(r["ticks_per_second"]) * 1e6 / n, "requests": n})
def med(xs, k): return statistics.median(x[k] for x in xs)
out = [f"Kernel event loop against the user-space loop · commit {commit} · Linux 7.2 in QEMU (software emulation) · {seconds} s in all",
       "", "One ring; wrk against /plaintext; medians over rounds, modes alternating; per request. Counts are firm under emulation; CPU time is emulated.", "",
       "| Scenario | Loop | requests | enters | CQEs in user space | CQEs held in the kernel | context switches | the ring thread's | CPU µs (emulated) |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
for s, modes in per.items():
    for mode, xs in modes.items():
        out.append(f"| {s} | {mode} | {int(med(xs, 'requests')):,} | {med(xs, 'enters'):.3f} | {med(xs, 'completions'):.3f} | {med(xs, 'deferred'):.3f} | {med(xs, 'context_switches'):.3f} | {med(xs, 'ring_context_switches'):.3f} | {med(xs, 'cpu_us'):.0f} |")
    if "Off" in modes and "Required" in modes:
        o, k = modes["Off"], modes["Required"]
        out.append(f"| | **kernel ÷ user** | | **{med(k, 'enters') / med(o, 'enters'):.2f}** | {med(k, 'completions') / med(o, 'completions'):.2f} | | {med(k, 'context_switches') / med(o, 'context_switches'):.2f} | {med(k, 'ring_context_switches') / med(o, 'ring_context_switches'):.2f} | {med(k, 'cpu_us') / med(o, 'cpu_us'):.2f} |")
open(f"{d}/results.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
