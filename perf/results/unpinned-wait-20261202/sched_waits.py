#!/usr/bin/env python3
"""Runnable-wait times of the ring threads, per CPU, from `perf sched timehist --state` output.

    perf sched record -o sched.data -- sleep 3        # while wrk loads the server
    perf sched timehist --state -i sched.data > th.txt
    python3 sched_waits.py th.txt

"wait time" is how long a thread waited between being switched out and switched in again; with
state R it was still runnable (preempted, or it yielded), so that is time spent in the run queue.
"""
import collections
import re
import sys

LINE = re.compile(r'\s*([\d.]+)\s+\[(\d+)\]\s+(.*?)\[[\d/]+\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)')
waits = collections.defaultdict(list)
runs = collections.Counter()
for line in open(sys.argv[1]):
    m = LINE.match(line)
    if not m:
        continue
    name, cpu, wait, run, state = m.group(3).strip(), int(m.group(2)), float(m.group(4)), float(m.group(6)), m.group(7)
    who = ('ring 0' if 'ring 0' in name else 'ring 1' if 'ring 1' in name else
           'thread pool' if 'TP Worker' in name else 'wrk' if name.startswith('wrk') else None)
    if who is None:
        continue
    runs[(who, cpu)] += run
    if state == 'R':
        waits[(who, cpu)].append(wait)

print('thread       cpu  ran ms  runnable waits  p50 ms  p90 ms  p99 ms  max ms  >1 ms  their total ms')
for (who, cpu), v in sorted(waits.items()):
    v.sort()
    n = len(v)
    long = [x for x in v if x > 1]
    print(f'{who:12} {cpu:3} {runs[(who, cpu)]:7.0f} {n:15} {v[n // 2]:7.3f} {v[int(n * .9)]:7.3f} {v[int(n * .99)]:7.3f} {v[-1]:7.3f} {len(long):6} {sum(long):15.0f}')
