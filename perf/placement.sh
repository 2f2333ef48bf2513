#!/usr/bin/env bash
# Placement of connections by load in the kernel event loop (#14 2d), in a Linux 7.2 virtual
# machine (scripts/kernel-vm.sh; software emulation, so the counts are the firm figures). Four rings
# on one TCP endpoint: without the kernel loop the kernel's SO_REUSEPORT hash alone chooses each
# connection's ring; with it (KernelEventLoop=Required) a ring busier than the least loaded one by
# more than the margin (2) hands the new connection over with IORING_OP_MSG_RING. Modes alternate,
# several rounds. Per run, while wrk holds its connections open (sampled halfway through the load):
# the open connections of each ring (the /stats request's own connection left out), their spread
# (most minus fewest) and the hand-overs; over the measured load: requests and io_uring_enter calls.
#
#   bash perf/placement.sh                  # builds perf/BenchmarkApp, boots 7.2, writes results
#   ROUNDS=5 SCENARIOS="c16 c64 c256" bash perf/placement.sh
#
# Scenarios: c<N>, wrk with N keep-alive connections against /plaintext; close<N>, N at a time with
# "Connection: close" (a new connection per request: the spread then shows the connections open at
# the sample's instant, and the hand-overs count all the accepts).
# Results: perf/results/placement-<time>/results.tsv and results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4}
RINGS=${RINGS:-4}
MODES=${MODES:-"Off Required"}
SCENARIOS=${SCENARIOS:-"c16 c64 c256 close16"}
PORT=${PORT:-5100}

if [ "${1:-}" = --guest ]; then
  APP=perf/.artifacts/bin/BenchmarkApp/release/BenchmarkApp
  out=$2
  stats() { curl -sf "http://127.0.0.1:$PORT/stats"; }
  printf 'round\tmode\tscenario\trequests\tenters\tplaced\tper_ring\n' > "$out"
  for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
      for mode in $MODES; do
        IoUring__KernelEventLoop=$mode IoUring__RingCount=$RINGS "$APP" --transport iouring --port "$PORT" --h2port $((PORT + 1)) --echoport $((PORT + 2)) > /tmp/placement-app.log 2>&1 &
        pid=$!
        for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/plaintext" && break; sleep 0.1; done
        curl -sf -o /dev/null "http://127.0.0.1:$PORT/plaintext" || { cat /tmp/placement-app.log >&2; exit 1; }
        case $scenario in
          close*) args=(-t1 -c"${scenario#close}" -H "Connection: close") ;; # before c*, which matches it too
          c*) args=(-t1 -c"${scenario#c}") ;;
          *) echo "unknown scenario $scenario" >&2; exit 2 ;;
        esac
        wrk "${args[@]}" -d1s "http://127.0.0.1:$PORT/plaintext" > /dev/null # warm-up: JIT
        s0=$(stats)
        wrk "${args[@]}" -d"${DURATION}s" "http://127.0.0.1:$PORT/plaintext" > /tmp/placement-wrk.txt &
        wrk_pid=$!
        sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')" # a benchmark's sample point, not a test's synchronisation
        mid=$(stats)
        wait "$wrk_pid"
        s1=$(stats)
        kill "$pid"; wait "$pid" 2>/dev/null || true
        requests=$(awk '/requests in/ { print $1 }' /tmp/placement-wrk.txt)
        value() { awk -v k="$1" '$1 == k { v = $2 } END { print v + 0 }' <<< "$2"; }
        enters=$(( $(value iouring.enters "$s1") - $(value iouring.enters "$s0") ))
        placed=$(( $(value iouring.kernel_loop.placed "$s1") - $(value iouring.kernel_loop.placed "$s0") ))
        # Open connections per ring at the sample; the /stats request's own is among them (the
        # report takes one off the largest when the total exceeds wrk's connections).
        per_ring=$(awk '$1 ~ /^iouring\.connections\.active\[/ { printf "%s%s", sep, $2; sep = "," }' <<< "$mid")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$scenario" "$requests" "$enters" "$placed" "$per_ring" >> "$out"
        echo "round $round $scenario $mode: $requests requests, $enters enters, $placed handed over, open per ring $per_ring" >&2
      done
    done
  done
  exit 0
fi

for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "perf/placement.sh: $tool is required (apt-get install $tool)" >&2; exit 1; }
done
dotnet build perf/BenchmarkApp/BenchmarkApp.csproj -c Release --artifacts-path perf/.artifacts -nologo -v q > /dev/null
dir=perf/results/placement-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$dir"
start=$SECONDS
ROUNDS=$ROUNDS DURATION=$DURATION RINGS=$RINGS MODES=$MODES SCENARIOS=$SCENARIOS PORT=$PORT \
  bash scripts/kernel-vm.sh --kernel 7.2 --timeout 3600 -- bash perf/placement.sh --guest "$dir/results.tsv"
python3 - "$dir" "$(git rev-parse --short HEAD)" $((SECONDS - start)) "$RINGS" <<'EOF'
import csv, statistics, sys
from collections import defaultdict
d, commit, seconds, rings = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = list(csv.DictReader(open(f"{d}/results.tsv"), delimiter="\t"))
per = defaultdict(lambda: defaultdict(list))
for r in rows:
    counts = [int(x) for x in r["per_ring"].split(",") if x != ""]
    scenario = r["scenario"]
    if scenario.startswith("c") and not scenario.startswith("close") and sum(counts) > int(scenario[1:]):
        counts[counts.index(max(counts))] -= 1  # the /stats request's own connection, counted on some ring
    n = int(r["requests"] or 0)
    per[scenario][r["mode"]].append({"counts": counts, "spread": max(counts) - min(counts) if counts else 0,
                                     "placed": int(r["placed"] or 0), "requests": n,
                                     "enters": int(r["enters"]) / n if n else 0})
out = [f"Placement by load against the SO_REUSEPORT hash alone · commit {commit} · {rings} rings · Linux 7.2 in QEMU (software emulation) · {seconds} s in all", "",
       "wrk against /plaintext, modes alternating. Open connections per ring sampled halfway through the load; spread = most minus fewest; medians over rounds (and each round's spread).", "",
       "| Scenario | Loop | spread, median | spreads by round | open per ring (round 1) | hand-overs per run | enters per request |", "|---|---|--:|---|---|--:|--:|"]
for s, modes in per.items():
    for mode, xs in modes.items():
        out.append(f"| {s} | {mode} | {statistics.median(x['spread'] for x in xs):g} | {' '.join(str(x['spread']) for x in xs)} | {' / '.join(str(c) for c in xs[0]['counts'])} | {statistics.median(x['placed'] for x in xs):g} | {statistics.median(x['enters'] for x in xs):.3f} |")
open(f"{d}/results.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
