#!/usr/bin/env bash
# Experiment driver: each mode alone in its own run.sh invocation, alternating, unpinned.
cd /work/main
MODES=${MODES:-"sockets yield doze doze-slack spindoze none"}
CONNS=${CONNS:-"16 128"}
ROUNDS_X=${ROUNDS_X:-2}
out=/work/exp/await-$(date +%H%M%S).csv
echo "round,mode,conns,rps,p50,p99,cpu_us,rss" > $out
for r in $(seq $ROUNDS_X); do
 for c in $CONNS; do
  for m in $MODES; do
   t=iouring; env=""
   case $m in
    sockets) t=sockets;;
    doze-slack) env="IOURING_AWAIT=doze IOURING_SLACK=1";;
    spindoze-slack) env="IOURING_AWAIT=spindoze IOURING_SLACK=1";;
    yield-slice) env="IOURING_AWAIT=yield IOURING_SLICE_US=100";;
    doze-slice) env="IOURING_AWAIT=doze IOURING_SLICE_US=100";;
    doze-slack-slice) env="IOURING_AWAIT=doze IOURING_SLACK=1 IOURING_SLICE_US=100";;
    none-slice) env="IOURING_AWAIT=none IOURING_SLICE_US=100";;
    adaptive-200) env="IOURING_AWAIT=adaptive IOURING_SLOW_US=200";;
    adaptive-50) env="IOURING_AWAIT=adaptive IOURING_SLOW_US=50";;
    nap) env="IOURING_AWAIT=nap IOURING_SLACK=1000";;
    nap2) env="IOURING_AWAIT=nap IOURING_SLACK=1000 IOURING_NAP_US=2";;
    nap-slice) env="IOURING_AWAIT=nap IOURING_SLACK=1000 IOURING_SLICE_US=100";;
    adaptive-long) env="IOURING_AWAIT=adaptive IOURING_SLOW_US=50 IOURING_NOWAIT_US=50000";;
    a500) env="IOURING_AWAIT=adaptive IOURING_SLOW_US=500 IOURING_NOWAIT_US=1000000";;
    a1000) env="IOURING_AWAIT=adaptive IOURING_SLOW_US=1000 IOURING_NOWAIT_US=1000000";;
    a500s) env="IOURING_AWAIT=adaptive IOURING_SLOW_US=500 IOURING_NOWAIT_US=5000000";;
    sockets-inline) t=sockets; env="INLINE=true";;
    yield-inline) env="IOURING_AWAIT=yield INLINE=true";;
    none-inline) env="IOURING_AWAIT=none INLINE=true";;
    yield-1ring) env="IOURING_AWAIT=yield RINGS=1";;
    none-1ring) env="IOURING_AWAIT=none RINGS=1";;
    yield1) env="IOURING_AWAIT=yield IOURING_MAX_YIELDS=1";;
    yield3) env="IOURING_AWAIT=yield IOURING_MAX_YIELDS=3";;
    yield1-slice) env="IOURING_AWAIT=yield IOURING_MAX_YIELDS=1 IOURING_SLICE_US=100";;
    avoid) env="IOURING_AWAIT=avoid IOURING_SLOW_US=1000 IOURING_NOWAIT_US=1000000";;
    avoid300) env="IOURING_AWAIT=avoid IOURING_SLOW_US=300 IOURING_NOWAIT_US=1000000";;
    *) env="IOURING_AWAIT=$m";;
   esac
   log=$(env $env SERVER_CPU=${SERVER_CPU:-0,1} CLIENT_CPU=${CLIENT_CPU:-1} MAX_OTHER=1000 RETRIES=0 ROUNDS=1 WARMUP=${WARMUP:-10} MAX_WARMUP=16 DURATION=${DURATION:-6} SCENARIOS=plaintext-$c TRANSPORTS=$t bash perf/run.sh 2>&1)
   d=$(echo "$log" | grep -o 'perf/results/[0-9-]*' | tail -1)
   [ -z "$d" ] && d=$(ls -dt perf/results/2026* | head -1)
   line=$(tail -1 $d/results.csv)
   echo "$line" | awk -F, -v r=$r -v m=$m -v c=$c '{print r","m","c","$11","$12","$13","$16","$18","$20","$22","$23","$24}' | tee -a $out
   echo "$d" >> /work/exp/dirs.txt
  done
 done
done
echo $out
