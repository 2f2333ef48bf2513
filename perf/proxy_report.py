#!/usr/bin/env python3
"""Summarises perf/proxy.sh's runs: proxy_report.py <results dir> reads results.tsv and meta.env
there and writes results.md (medians per connection count and mode, the spread between rounds, and
io_uring / Sockets ratios with the range of the ratios of the pairs run in the same round).
Standard library only."""

import csv
import os
import statistics
import sys

NAMES = {
    "iouring": "io_uring both ways",
    "sockets": "Sockets both ways (the factory's fallback out)",
    "stock": "Sockets, stock YARP (HttpClient's sockets out)",
    "inbound": "io_uring in, HttpClient's sockets out",
}
SHORT = {"iouring": "io_uring", "sockets": "Sockets", "stock": "stock", "inbound": "inbound"}
# A run is marked disturbed when something else took more than this % of the proxy's core (proxy.sh's MAX_OTHER,
# in meta.env as max_other_pct; this default for results without it).
DISTURBED_PCT = 10


def read_meta(out_dir):
    meta = {}
    with open(os.path.join(out_dir, "meta.env")) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return meta


def per_run(row, hz):
    requests = int(row["requests"])
    wall = float(row["wall_s"])
    proxy, backend, client = (int(row[k]) for k in ("proxy_ticks", "backend_ticks", "client_ticks"))
    return {
        "round": int(row["round"]),
        "rps": float(row["rps"]),
        "p50": float(row["p50_ms"]) if row["p50_ms"] not in ("", "None") else None,
        "p99": float(row["p99_ms"]) if row["p99_ms"] not in ("", "None") else None,
        "errors": int(row["errors"]),
        "proxy_us": proxy / hz * 1e6 / requests if requests else None,
        "backend_us": backend / hz * 1e6 / requests if requests else None,
        "proxy_core_pct": proxy / hz / wall * 100,
        # Whatever else ran on each core: busy ticks less those of the processes placed there.
        "other_on_proxy_core_pct": max(0.0, (int(row["proxy_core_busy_ticks"]) - proxy) / hz / wall * 100),
        "other_on_other_core_pct": max(0.0, (int(row["other_core_busy_ticks"]) - backend - client) / hz / wall * 100),
        "load1": float(row["loadavg1"]),
        "waited": int(row.get("quiet_wait_s") or 0),
        "attempt": int(row.get("attempt") or 0),
        "switches": int(row["proxy_context_switches"]) / requests if row.get("proxy_context_switches") and requests else None,
    }


def med(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def main(out_dir):
    meta = read_meta(out_dir)
    hz = int(meta["clk_tck"])
    limit = int(meta.get("max_other_pct", DISTURBED_PCT))
    with open(os.path.join(out_dir, "results.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    groups = {}
    for row in rows:
        groups.setdefault(int(row["connections"]), {}).setdefault(row["mode"], []).append(per_run(row, hz))

    out = [
        f"YARP sample, proxy and backend on io_uring or on Sockets · commit {meta.get('commit')} · "
        f"{meta.get('rounds')} rounds, modes alternating · {meta.get('elapsed_s', '?')} s in all"
        + (f" · {meta['hog']} busy loop(s) on the proxy's core during every run" if meta.get("hog", "0") != "0" else ""),
        "",
        f"wrk -t1 --latency against the proxy's GET / (forwarded to the backend's), {meta.get('duration_s')} s measured per run "
        f"after a {meta.get('warmup_s')} s warm-up and {meta.get('settle_s')} s at the run's connection count; proxy on CPU "
        f"{meta.get('proxy_cpu')}, backend on CPU {meta.get('backend_cpu')}, wrk on CPU {meta.get('client_cpu')}. "
        f"Linux {meta.get('kernel')}, {meta.get('cpus')} CPUs ({meta.get('virtualization')}), .NET SDK {meta.get('dotnet_sdk')}. "
        f"Load average (1, 5, 15 min) {meta.get('loadavg_start')} at the start, {meta.get('loadavg_end')} at the end.",
        "",
        "Medians over the rounds. spread: (highest − lowest) / median of req/s. CPU µs/req: the process's utime + stime "
        "over the run per proxied request. else on the proxy's core / the other core: busy time of that core not "
        "spent by the processes placed there, in % of the run.",
        "",
        "| Connections | Mode | req/s | spread | p50 ms | p99 ms | proxy CPU µs/req | backend CPU µs/req | proxy context switches/req | proxy's core used by the proxy | else on the proxy's core | else on the other core | load avg | errors |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    order = list(NAMES)
    for conns in sorted(groups):
        modes = dict(sorted(groups[conns].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        for mode, runs in modes.items():
            rps = [r["rps"] for r in runs]
            spread = (max(rps) - min(rps)) / statistics.median(rps) * 100 if rps else 0
            out.append(
                f"| {conns} | {NAMES.get(mode, mode)} | {fmt(med(runs, 'rps'))} | {spread:.0f} % | {fmt(med(runs, 'p50'), 2)} | "
                f"{fmt(med(runs, 'p99'), 2)} | {fmt(med(runs, 'proxy_us'))} | {fmt(med(runs, 'backend_us'))} | {fmt(med(runs, 'switches'), 2)} | "
                f"{med(runs, 'proxy_core_pct'):.0f} % | {med(runs, 'other_on_proxy_core_pct'):.0f} % | "
                f"{med(runs, 'other_on_other_core_pct'):.0f} % | {med(runs, 'load1'):.2f} | {sum(r['errors'] for r in runs)} |")
        for other in [m for m in modes if m != "iouring" and "iouring" in modes]:
            u, s = modes["iouring"], modes[other]

            def ratio(key):
                a, b = med(u, key), med(s, key)
                return a / b if a is not None and b else None

            def paired(key):
                by_round = {r["round"]: r[key] for r in s}
                values = sorted(r[key] / by_round[r["round"]] for r in u if by_round.get(r["round"]))
                return f"{values[0]:.2f}–{values[-1]:.2f}" if values else "–"

            out.append(
                f"| | **io_uring ÷ {SHORT.get(other, other)}** | **{fmt(ratio('rps'), 2)}** | {paired('rps')} | {fmt(ratio('p50'), 2)} | "
                f"{fmt(ratio('p99'), 2)} | **{fmt(ratio('proxy_us'), 2)}** ({paired('proxy_us')}) | {fmt(ratio('backend_us'), 2)} "
                f"({paired('backend_us')}) | {fmt(ratio('switches'), 2)} | | | | | |")
    out += ["", "Ratio rows: io_uring both ways ÷ the other mode, of the medians (above 1 is better for req/s, below 1 for the rest); "
            "the ranges are the lowest and highest ratio of the two modes' runs in the same round.", ""]
    every = [r for modes in groups.values() for runs in modes.values() for r in runs]
    disturbed = [r for r in every if r["other_on_proxy_core_pct"] > limit]
    again = sum(r["attempt"] for r in every)
    out.append(f"{again} disturbed runs were measured again (the retries allowed: {meta.get('retries', '?')}). "
               f"{len(disturbed)} of the {len(every)} runs kept had more than {limit} % of the proxy's core taken by "
               "something else (marked below); they are in the medians.")
    out.append("")
    out.append("Every run (round, mode, connections: req/s, p99 ms, proxy / backend CPU µs per request, load average, "
               "what else took the proxy's core and the other core, seconds waited for a quiet second before it):")
    out.append("")
    for conns in sorted(groups):
        for mode, runs in groups[conns].items():
            for r in sorted(runs, key=lambda r: r["round"]):
                out.append(f"- r{r['round']} {mode} {conns}: {r['rps']:,.0f} req/s, p99 {fmt(r['p99'], 2)}, "
                           f"proxy {fmt(r['proxy_us'])} / backend {fmt(r['backend_us'])} µs, load {r['load1']:.2f}, "
                           f"else {r['other_on_proxy_core_pct']:.0f} % / {r['other_on_other_core_pct']:.0f} %, waited {r['waited']} s"
                           + (" **disturbed**" if r["other_on_proxy_core_pct"] > limit else ""))
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
