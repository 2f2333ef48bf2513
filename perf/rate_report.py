#!/usr/bin/env python3
"""perf/rate.sh's report: results.md (medians per transport, io_uring ÷ Sockets) and latency.png
(every run's latency distribution, p50 to p99.99, both transports on one chart).

    python3 perf/rate_report.py perf/results/rate-<stamp>
"""
import csv
import glob
import math
import os
import statistics
import sys

out = sys.argv[1]
meta = dict(line.rstrip('\n').split('=', 1) for line in open(os.path.join(out, 'meta.env')) if '=' in line)
runs = list(csv.DictReader(open(os.path.join(out, 'results.tsv')), delimiter='\t'))
columns = [('rate', 'req/s', 0), ('p50_ms', 'p50 ms', 3), ('p90_ms', 'p90 ms', 3), ('p99_ms', 'p99 ms', 3),
           ('p999_ms', 'p99.9 ms', 3), ('p9999_ms', 'p99.99 ms', 3), ('max_ms', 'max ms', 2),
           ('server_cpu_us_per_req', 'CPU µs/req', 1), ('errors', 'errors', 0)]
transports = sorted({r['transport'] for r in runs}, key=lambda t: (t != 'iouring', t))
median = {t: {c: statistics.median(float(r[c]) for r in runs if r['transport'] == t) for c, _, _ in columns} for t in transports}

if meta.get('sockets_max_rps'):
    chosen = f"{float(meta['rate_fraction']):g} of Sockets' {meta['sockets_max_rps']} req/s closed-loop maximum"
else:
    chosen = 'set by RATE'
lines = [f"# Latency at a fixed rate ({meta.get('stamp', '')})", '',
         f"{meta.get('rate')} req/s ({chosen}) "
         f"on {meta.get('connections')} connections, {meta.get('duration_s')} s measured per run, "
         f"{meta.get('rounds')} rounds alternating; server on CPU {meta.get('server_cpu')}, client on CPU "
         f"{meta.get('client_cpu')}; commit {meta.get('commit')}, kernel {meta.get('kernel')}. "
         'Latency runs from when each request was due (perf/RateClient). Medians over the rounds.', '',
         '| Transport | ' + ' | '.join(h for _, h, _ in columns) + ' |',
         '|---|' + '--:|' * len(columns)]
for t in transports:
    lines.append(f'| {t} | ' + ' | '.join(f'{median[t][c]:,.{d}f}' for c, _, d in columns) + ' |')
if 'iouring' in median and 'sockets' in median:
    ratio = []
    for c, _, d in columns:
        s = median['sockets'][c]
        ratio.append(f"{median['iouring'][c] / s:.2f}" if s else '–')
    lines.append('| **io_uring ÷ Sockets** | ' + ' | '.join(f'**{x}**' for x in ratio) + ' |')
lines += ['', 'Every run:', '', '| Round | Transport | ' + ' | '.join(h for _, h, _ in columns) + ' |', '|--:|---|' + '--:|' * len(columns)]
for r in runs:
    lines.append(f"| {r['round']} | {r['transport']} | " + ' | '.join(f'{float(r[c]):,.{d}f}' for c, _, d in columns) + ' |')
lines += ['', '![latency distribution](latency.png)', '']
open(os.path.join(out, 'results.md'), 'w').write('\n'.join(lines))

try:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
except ImportError:
    print('python3-matplotlib is missing: no chart', file=sys.stderr)
    sys.exit(0)

colors = {'iouring': 'tab:blue', 'sockets': 'tab:orange'}
fig, ax = plt.subplots(figsize=(8, 5))
for path in sorted(glob.glob(os.path.join(out, 'percentiles-*.tsv'))):
    _, rnd, transport = os.path.basename(path)[:-4].split('-', 2)
    rows = list(csv.DictReader(open(path), delimiter='\t'))
    x = [1 / (1 - float(r['percentile']) / 100) for r in rows]
    y = [float(r['latency_ms']) for r in rows]
    ax.plot(x, y, color=colors.get(transport), alpha=0.8, linewidth=1.2,
            label=f'{transport}' if rnd == '1' else None)
ticks = [50, 90, 99, 99.9, 99.99]
ax.set_xscale('log')
ax.set_yscale('log')
ax.set_xticks([1 / (1 - p / 100) for p in ticks])
ax.set_xticklabels([f'{p:g}' for p in ticks])
ax.minorticks_off()
ax.set_xlabel('percentile')
ax.set_ylabel('latency, ms (from when the request was due)')
ax.set_title(f"plaintext at {meta.get('rate')} req/s, {meta.get('connections')} connections, one line per run")
ax.grid(True, which='major', alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(out, 'latency.png'), dpi=110)
