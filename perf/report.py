#!/usr/bin/env python3
"""Parses the load generators' output that perf/run.sh collects and writes the report.

    report.py build <raw dir> <out dir>   results.csv, results.md, chart.png (chart.svg without matplotlib)
                                          for the plaintext sweep, ratios.png (.svg) for the other scenarios
    report.py summary <raw file> <kind> [scenario]   one line for run.sh's progress log
    report.py h2-percentiles <h2load log> p50/p99 from h2load's per-request log, as key=value lines

Standard library only; matplotlib is used for the chart when it can be imported.
"""

import csv
import json
import os
import re
import statistics
import sys

TRANSPORT_NAMES = {"iouring": "io_uring", "sockets": "Sockets", "baseline": "io_uring, baseline"}
# The ratio row divides the first of these by the second.
RATIO = ("iouring", "sockets")
# With DISPATCH, io_uring runs are named iouring-<mode>; each mode gets a ratio row against this one.
DISPATCH_BASELINE = "iouring-Kernel"


def transport_name(transport):
    if transport.startswith("iouring-"):
        return f"io_uring, {transport[len('iouring-'):]} dispatch"
    return TRANSPORT_NAMES.get(transport, transport)


def ratio_pairs(transports):
    """(a, b) pairs with a ratio row: io_uring ÷ Sockets, each dispatch mode ÷ Kernel dispatch, and
    with BASELINE (run.sh) io_uring ÷ the baseline build's io_uring and the baseline ÷ Sockets."""
    pairs = [RATIO]
    if "baseline" in transports:
        pairs += [("iouring", "baseline"), ("baseline", "sockets")]
    if DISPATCH_BASELINE in transports:
        pairs += [(t, DISPATCH_BASELINE) for t in transports if t.startswith("iouring-") and t != DISPATCH_BASELINE]
    return pairs

CSV_FIELDS = [
    "round", "scenario", "transport", "attempt", "protocol", "connections", "depth", "loadgen",
    "requests", "duration_s", "rps", "p50_ms", "p99_ms", "errors",
    "server_cpu_s", "cpu_us_per_req", "server_core_us_per_req", "rss_mib", "client_cpu_s",
    "server_core_irq_pct", "client_core_irq_pct", "server_core_other_pct", "client_core_other_pct",
    "steal_pct", "disturbed",
    # Later additions, after the first columns so older readers of the CSV keep working.
    "unit", "p90_ms", "p999_ms", "connections_opened", "conns_per_s", "body_mib_s",
]


# --- parsing ------------------------------------------------------------------------------------

def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(text, pipelined):
    out = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if not m:
        raise ValueError("no request count in wrk output")
    out["requests"] = int(m.group(1))
    out["duration_s"] = to_ms(m.group(2), m.group(3)) / 1000
    out["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    # Under pipelining wrk times a whole batch and its coordinated-omission correction assumes one
    # request per round trip, so its percentiles are meaningless there (the 99th often prints 0).
    if not pipelined:
        for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
            m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
            out[key] = to_ms(m.group(1), m.group(2)) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    out["errors"] = errors
    return out


def facts(text):
    """The "key=value" lines run.sh appends to a load generator's output (and LoadClient prints)."""
    return dict(re.findall(r"^([a-z][\w.]*)=(\S*)$", text, re.M))


def parse_h2load(text):
    out = {}
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", text)
    if not m:
        raise ValueError("no summary in h2load output")
    out["duration_s"] = to_ms(m.group(1), m.group(2)) / 1000
    out["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    out["requests"] = int(m.group(3))
    out["errors"] = int(m.group(4)) + int(m.group(5)) + int(m.group(6))
    for key in ("p50_ms", "p99_ms"):
        m = re.search(rf"^{key}=([\d.]+)$", text, re.M)
        out[key] = float(m.group(1)) if m else None
    known = facts(text)
    if "grpc_messages_per_call" in known:
        grpc_calls(out, text, int(known["grpc_messages_per_call"]), int(known["grpc_data_bytes_per_call"]))
    return out


def grpc_calls(out, text, messages_per_call, data_bytes_per_call):
    """h2load counts every call answered 200 as a success, but gRPC answers a failed call with 200 and
    a status in the trailers, and no message: a call is counted an error when the DATA bytes received
    fall short of a full answer for each. Then the figures become per message (a server-streaming
    call answers several), latency staying per call."""
    m = re.search(r"^traffic: .*?\((\d+)\) data", text, re.M)
    if not m:
        raise ValueError("no traffic line in h2load output")
    answered = int(m.group(1)) // data_bytes_per_call
    out["errors"] += max(0, out["requests"] - answered)
    out["requests"] *= messages_per_call
    out["rps"] *= messages_per_call


def parse_loadclient(text):
    """perf/LoadClient: WebSocket messages echoed, every message timed."""
    known = facts(text)
    if "messages" not in known:
        raise ValueError("no message count in LoadClient output: " + text.strip()[-200:])
    return {
        "requests": int(known["messages"]),
        "duration_s": float(known["seconds"]),
        "rps": float(known["messages_per_s"]),
        "p50_ms": float(known["p50_ms"]),
        "p90_ms": float(known["p90_ms"]),
        "p99_ms": float(known["p99_ms"]),
        "p999_ms": float(known["p99.9_ms"]),
        "errors": int(known["errors"]),
    }


def parse_bombardier(text):
    # The JSON report, then run.sh's key=value lines.
    data, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
    result = data["result"]
    # Responses, as wrk counts them; "others" are requests that got none (their errors are listed).
    responses = sum(result[k] for k in ("req1xx", "req2xx", "req3xx", "req4xx", "req5xx"))
    duration = float(result["timeTakenSeconds"])
    percentiles = result.get("latency", {}).get("percentiles", {})  # microseconds
    return {
        "requests": responses,
        "duration_s": duration,
        "rps": responses / duration,
        "p50_ms": percentiles["50"] / 1000 if "50" in percentiles else None,
        "p99_ms": percentiles["99"] / 1000 if "99" in percentiles else None,
        "errors": result["req1xx"] + result["req4xx"] + result["req5xx"] + result["others"],
    }


def parse(path, kind):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if kind == "wrk":
        return parse_wrk(text, pipelined=False)
    if kind == "wrk-pipeline":
        return parse_wrk(text, pipelined=True)
    if kind == "h2load":
        return parse_h2load(text)
    if kind == "bombardier":
        out = parse_bombardier(text)
    elif kind == "loadclient":
        out = parse_loadclient(text)
    else:
        raise ValueError(f"unknown load generator {kind}")
    return out


def parse_run(path, kind):
    """parse() plus what run.sh appended: connections the server accepted, body bytes per request."""
    out = parse(path, kind)
    with open(path, encoding="utf-8", errors="replace") as f:
        known = facts(f.read())
    if "connections_opened" in known:
        out["connections_opened"] = int(known["connections_opened"])
        out["conns_per_s"] = out["connections_opened"] / out["duration_s"] if out["duration_s"] else None
    if "body_bytes" in known:
        out["body_mib_s"] = out["rps"] * int(known["body_bytes"]) / (1 << 20)
    return out


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, round(p / 100 * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def h2_percentiles(log_path):
    # h2load --log-file: one line per request, "<start µs since epoch>\t<status>\t<duration µs>".
    durations = []
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                durations.append(int(parts[2]))
    durations.sort()
    for p in (50, 99):
        value = percentile(durations, p)
        if value is not None:
            print(f"p{p}_ms={value / 1000:.4f}")


# --- report -------------------------------------------------------------------------------------

def read_meta(raw_dir):
    meta = {}
    with open(os.path.join(raw_dir, "meta.env"), encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return meta


def collect(raw_dir, clk_tck, max_other):
    rows = []
    with open(os.path.join(raw_dir, "runs.tsv"), encoding="utf-8") as f:
        for run in csv.DictReader(f, delimiter="\t"):
            row = {k: run[k] for k in ("round", "scenario", "transport", "attempt", "protocol", "connections", "depth", "loadgen")}
            row.update(parse_run(os.path.join(raw_dir, run["raw"]), run["loadgen"]))
            row["unit"] = unit(run["scenario"])
            ticks = {k: int(run[k]) for k in ("server_ticks", "server_cpu_busy_ticks", "server_cpu_irq_ticks",
                                              "server_cpu_steal_ticks", "client_ticks", "client_cpu_busy_ticks",
                                              "client_cpu_irq_ticks")}
            wall_ticks = float(run["wall_s"]) * clk_tck
            requests = row["requests"]
            row["server_cpu_s"] = ticks["server_ticks"] / clk_tck
            row["cpu_us_per_req"] = row["server_cpu_s"] * 1e6 / requests if requests else None
            # Everything the server's core did: the server, softirqs while it was idle (none under
            # load), and any other process.
            row["server_core_us_per_req"] = ticks["server_cpu_busy_ticks"] / clk_tck * 1e6 / requests if requests else None
            row["rss_mib"] = int(run["rss_kib"]) / 1024
            row["client_cpu_s"] = ticks["client_ticks"] / clk_tck
            row["server_core_irq_pct"] = ticks["server_cpu_irq_ticks"] / wall_ticks * 100
            row["client_core_irq_pct"] = ticks["client_cpu_irq_ticks"] / wall_ticks * 100
            # Busy ticks of a core minus its pinned process: other processes, and softirqs while the
            # core idled (the load generator's core idles; the server's does not under load).
            row["server_core_other_pct"] = (ticks["server_cpu_busy_ticks"] - ticks["server_ticks"]) / wall_ticks * 100
            row["client_core_other_pct"] = (ticks["client_cpu_busy_ticks"] - ticks["client_ticks"]) / wall_ticks * 100
            row["steal_pct"] = ticks["server_cpu_steal_ticks"] / wall_ticks * 100
            row["disturbed"] = int(round(row["server_core_other_pct"]) > max_other)
            rows.append(row)
    return rows


def fmt(value, digits):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_csv(rows, path):
    digits = {"duration_s": 3, "rps": 1, "p50_ms": 3, "p99_ms": 3, "server_cpu_s": 2, "cpu_us_per_req": 2,
              "server_core_us_per_req": 2, "rss_mib": 1, "client_cpu_s": 2, "server_core_other_pct": 1,
              "client_core_other_pct": 1, "steal_pct": 1, "p90_ms": 3, "p999_ms": 3, "conns_per_s": 1,
              "body_mib_s": 1}
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for row in rows:
            writer.writerow([fmt(row.get(k), digits.get(k, 0)) for k in CSV_FIELDS])


def median_of(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def unit(name):
    """What one "request" of a scenario is: a message for WebSockets and gRPC, else an HTTP request."""
    return "message" if re.match(r"(ws\d|grpc)", name) else "request"


def scenario_label(name):
    m = re.fullmatch(r"(plaintext|json|64k|delay)-(\d+)", name)
    if m:
        return f"HTTP/1.1 {m.group(1)}, {m.group(2)} conns"
    m = re.fullmatch(r"1m-(\d+)", name)
    if m:
        return f"HTTP/1.1 1 MiB responses, {m.group(1)} conns"
    m = re.fullmatch(r"tls-(\d+)", name)
    if m:
        return f"HTTPS, HTTP/1.1 plaintext, {m.group(1)} conns"
    m = re.fullmatch(r"h2tls-(\d+)x(\d+)", name)
    if m:
        return f"HTTPS, HTTP/2 plaintext, {m.group(1)} conns × {m.group(2)} streams"
    m = re.fullmatch(r"close-(\d+)", name)
    if m:
        return f"HTTP/1.1 plaintext, a new connection per request, {m.group(1)} at a time"
    m = re.fullmatch(r"upload-(\d+)", name)
    if m:
        return f"HTTP/1.1 8 MiB uploads, {m.group(1)} conns"
    m = re.fullmatch(r"ws(\d+)(k?)-(\d+)", name)
    if m:
        size = f"{m.group(1)} KiB" if m.group(2) else f"{m.group(1)} B"
        return f"WebSocket echo, {size} messages, {m.group(3)} conns (per message)"
    m = re.fullmatch(r"grpc-(\d+)x(\d+)", name)
    if m:
        return f"gRPC unary, {m.group(1)} conns × {m.group(2)} streams"
    m = re.fullmatch(r"grpcstream-(\d+)x(\d+)", name)
    if m:
        return f"gRPC server streaming, {m.group(1)} conns × {m.group(2)} calls (per message, latency per call)"
    m = re.fullmatch(r"pipeline(\d+)-(\d+)", name)
    if m:
        return f"HTTP/1.1 plaintext, {m.group(2)} conns, pipelined ×{m.group(1)}"
    m = re.fullmatch(r"h2-(\d+)x(\d+)", name)
    if m:
        return f"HTTP/2 plaintext, {m.group(1)} conns × {m.group(2)} streams"
    m = re.fullmatch(r"uneven(\d+)-(\d+)", name)
    if m:
        return f"HTTP/1.1 plaintext, {m.group(2)} conns, beside {m.group(1)} conns of 0.5 ms /cpu requests"
    return name


def summarize(rows):
    """{scenario: {transport: {metric: median, ...}}} in first-seen order."""
    table = {}
    for row in rows:
        table.setdefault(row["scenario"], {}).setdefault(row["transport"], []).append(row)
    summary = {}
    for scenario, by_transport in table.items():
        summary[scenario] = {}
        for transport, runs in by_transport.items():
            m = {k: median_of(runs, k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_mib",
                                                 "p90_ms", "p999_ms", "conns_per_s", "body_mib_s")}
            rps = [r["rps"] for r in runs]
            m["spread_pct"] = (max(rps) - min(rps)) / m["rps"] * 100 if m["rps"] else None
            m["runs"] = len(runs)
            m["errors"] = sum(r["errors"] for r in runs)
            summary[scenario][transport] = m
    return summary


def paired_ratios(rows, scenario, key, pair=RATIO):
    """a ÷ b (io_uring ÷ Sockets by default) of one figure within each round, where the two ran back to back."""
    a_name, b_name = pair
    by_round = {}
    for row in rows:
        if row["scenario"] == scenario and row.get(key) is not None:
            by_round.setdefault(row["round"], {})[row["transport"]] = row[key]
    return [r[a_name] / r[b_name] for r in by_round.values() if a_name in r and b_name in r and r[b_name]]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def warmup_text(meta):
    until = meta.get("warmup_until")
    if until:
        return f"at least {meta.get('warmup_s')} s warm-up (then until {until})"
    return f"{meta.get('warmup_s')} s warm-up"


def write_markdown(summary, rows, meta, path, rings):
    lines = []
    dirty = meta.get("dirty_files", "0")
    lines.append(f"Run {meta.get('stamp')} · commit {meta.get('commit')}"
                 + (f" + {dirty} uncommitted file(s) under src/" if dirty not in ("", "0") else "")
                 + f" · Linux {meta.get('kernel')} · {meta.get('cpu')} ({meta.get('cpus')} CPUs, "
                 + f"{meta.get('virtualization')}) · .NET SDK {meta.get('dotnet_sdk')}")
    lines.append("")
    lines.append(f"Server on CPU {meta.get('server_cpu')}, load generator on CPU {meta.get('client_cpu')}; "
                 f"{meta.get('rounds')} rounds of {warmup_text(meta)} + {meta.get('duration_s')} s measured "
                 f"per scenario and transport, transports alternating; medians over rounds. "
                 f"UnsafePreferInlineScheduling={meta.get('inline')}. "
                 f"Load average {meta.get('loadavg_start')} at start, {meta.get('loadavg_end')} at end; "
                 f"{meta.get('elapsed_s')} s in all.")
    lines.append("")
    lines.append("| Scenario | Transport | req/s | spread | p50 ms | p99 ms | CPU µs/req | RSS MiB |")
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|")
    for scenario, by_transport in summary.items():
        label = scenario_label(scenario)
        for transport, m in by_transport.items():
            errors = f" ({m['errors']} errors)" if m["errors"] else ""
            lines.append(f"| {label} | {transport_name(transport)}{errors} | {fmt_int(m['rps'])} | "
                         f"{fmt_pct(m['spread_pct'])} | {fmt_num(m['p50_ms'])} | {fmt_num(m['p99_ms'])} | "
                         f"{fmt_num(m['cpu_us_per_req'], 1)} | {fmt_num(m['rss_mib'], 0)} |")
            label = ""
        for a_name, b_name in ratio_pairs(list(by_transport)):
            if a_name not in by_transport or b_name not in by_transport:
                continue
            a, b = by_transport[a_name], by_transport[b_name]
            cells = [ratio(a[k], b[k]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_mib")]
            paired = paired_ratios(rows, scenario, "rps", (a_name, b_name))
            paired_range = f"{min(paired):.2f}–{max(paired):.2f}" if paired else ""
            lines.append(f"| | **{transport_name(a_name)} / {transport_name(b_name)}** | **{fmt_num(cells[0], 2)}** | {paired_range} | "
                         f"{fmt_num(cells[1], 2)} | {fmt_num(cells[2], 2)} | **{fmt_num(cells[3], 2)}** | {fmt_num(cells[4], 2)} |")
    lines.append("")
    lines += extra_tables(summary)
    if meta.get("dispatch", "default") != "default":
        lines.append(f"io_uring dispatch modes compared: {meta.get('dispatch')}, {meta.get('rings')} rings; "
                     "dispatch ratio rows divide each mode by Kernel dispatch.")
        lines.append("")
    lines.append("Ratios are io_uring ÷ Sockets of the medians: above 1 is better for req/s, below 1 is better for the rest. "
                 "Spread is (max − min) ÷ median of req/s over the rounds; on a ratio row, the lowest and highest req/s ratio "
                 "of the two transports measured back to back in one round. CPU µs/req is the server process's "
                 "user + system time over the measured interval divided by the requests served. "
                 "Pipelined latencies are left out: wrk times a batch and misapplies its coordinated-omission correction there. "
                 "For WebSocket and gRPC scenarios a request is a message (req/s: messages/s; CPU µs per message); "
                 "the latency of server streaming is that of the whole call.")
    if rows:
        def med_max(key):
            values = [r[key] for r in rows]
            return f"{statistics.median(values):.0f}/{max(values):.0f} %"

        disturbed = sum(r["disturbed"] for r in rows)
        retried = len({(r["round"], r["scenario"]) for r in rows if r["attempt"] != "0"})
        lines.append("")
        lines.append(f"Time the server's core spent on anything but the server: {med_max('server_core_other_pct')} "
                     f"(median/max over measured runs; the load generator's core, where idle-time softirqs count too: "
                     f"{med_max('client_core_other_pct')}); steal max {max(r['steal_pct'] for r in rows):.0f} %. "
                     f"Pairs measured again because it passed {meta.get('max_other_pct')} %: {retried}; "
                     f"disturbed runs kept: {disturbed} of {len(rows)}.")
    if rings:
        lines.append("")
        lines.append("Active connections per ring halfway through each measured io_uring run (ring 0, 1, ...; "
                     "all the load's connections and the one reading them):")
        lines.append("")
        lines.append("| Round | Scenario | Transport | per ring |")
        lines.append("|--:|---|---|---|")
        for (round_, scenario, transport), per_ring in rings.items():
            lines.append(f"| {round_} | {scenario} | {transport_name(transport)} | {per_ring} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def extra_tables(summary):
    """Figures some scenarios have beyond the main table: connections per second (close-N, from the
    server's count of accepted connections), body MiB/s (64k, 1m, upload), and the WebSocket
    client's finer percentiles."""
    lines = []

    def table(title, header, keys, digits, want):
        chosen = [(scenario, by_transport) for scenario, by_transport in summary.items() if want(scenario, by_transport)]
        if not chosen:
            return
        lines.append(title)
        lines.append("")
        lines.append("| Scenario | Transport | " + " | ".join(header) + " |")
        lines.append("|---|---|" + "--:|" * len(header))
        for scenario, by_transport in chosen:
            label = scenario_label(scenario)
            for transport, m in by_transport.items():
                lines.append(f"| {label} | {transport_name(transport)} | "
                             + " | ".join(fmt_num(m[k], digits) if digits else fmt_int(m[k]) for k in keys) + " |")
                label = ""
            for a_name, b_name in ratio_pairs(list(by_transport)):
                if a_name in by_transport and b_name in by_transport:
                    cells = [fmt_num(ratio(by_transport[a_name][k], by_transport[b_name][k]), 2) for k in keys]
                    lines.append(f"| | **{transport_name(a_name)} / {transport_name(b_name)}** | " + " | ".join(cells) + " |")
        lines.append("")

    def any_value(key):
        return lambda scenario, by_transport: any(m.get(key) is not None for m in by_transport.values())

    table("Connections per second: every request on a new connection; the server's count of the connections it "
          "accepted during the measured interval (the load generator's requests/s above should match it).",
          ["connections/s", "requests/s"], ["conns_per_s", "rps"], None,
          lambda scenario, by_transport: scenario.startswith("close-"))
    table("Body throughput: request/s × the body each request carries (uploads: sent; 64k and 1m: received).",
          ["MiB/s"], ["body_mib_s"], None, any_value("body_mib_s"))
    table("WebSocket round trips, per message (perf/LoadClient times every message).",
          ["p50 ms", "p90 ms", "p99 ms", "p99.9 ms"], ["p50_ms", "p90_ms", "p99_ms", "p999_ms"], 2, any_value("p999_ms"))
    return lines


def fmt_int(value):
    return "" if value is None else f"{value:,.0f}"


def fmt_num(value, digits=2):
    if value is None:
        return "–"
    if digits == 2 and value >= 100:
        digits = 0
    elif digits == 2 and value >= 10:
        digits = 1
    return f"{value:.{digits}f}"


def fmt_pct(value):
    return "" if value is None else f"{value:.0f} %"


def sweep(summary):
    """Median req/s and CPU µs/req of the plaintext-<connections> scenarios, by transport."""
    points = {}
    for scenario, by_transport in summary.items():
        m = re.fullmatch(r"plaintext-(\d+)", scenario)
        if not m:
            continue
        for transport, values in by_transport.items():
            points.setdefault(transport, []).append((int(m.group(1)), values["rps"], values["cpu_us_per_req"]))
    for values in points.values():
        values.sort()
    return points


def draw_chart(summary, out_dir):
    points = sweep(summary)
    if not points:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return draw_svg(points, os.path.join(out_dir, "chart.svg"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for transport, values in points.items():
        xs = [v[0] for v in values]
        left.plot(xs, [v[1] for v in values], marker="o", label=transport_name(transport))
        right.plot(xs, [v[2] for v in values], marker="o", label=transport_name(transport))
    for axis, title in ((left, "requests/s (median)"), (right, "server CPU µs per request (median)")):
        axis.set_xscale("log", base=2)
        xs = sorted({v[0] for values in points.values() for v in values})
        axis.set_xticks(xs)
        axis.set_xticklabels([str(x) for x in xs])
        axis.set_xlabel("connections (HTTP/1.1 plaintext, no pipelining)")
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, "chart.png")
    fig.savefig(path, dpi=90)
    return path


def draw_svg(points, path):
    """The same two panels as the matplotlib chart, drawn by hand."""
    width, height, pad = 900, 360, 60
    panel_w = (width - 3 * pad) / 2
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    xs = sorted({v[0] for values in points.values() for v in values})
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for panel, (index, title) in enumerate(((1, "requests/s (median)"), (2, "server CPU µs per request (median)"))):
        x0 = pad + panel * (panel_w + pad)
        y0, y1 = height - pad, pad
        top = max(v[index] or 0 for values in points.values() for v in values) * 1.1 or 1

        def px(x, x0=x0):
            return x0 + (xs.index(x) / max(1, len(xs) - 1)) * panel_w

        def py(y, top=top, y0=y0, y1=y1):
            return y0 - (y / top) * (y0 - y1)

        parts.append(f'<text x="{x0 + panel_w / 2}" y="{y1 - 20}" text-anchor="middle" font-size="14">{title}</text>')
        parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + panel_w}" y2="{y0}" stroke="black"/>')
        parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>')
        for x in xs:
            parts.append(f'<text x="{px(x)}" y="{y0 + 16}" text-anchor="middle">{x}</text>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{y0 + 34}" text-anchor="middle">connections (HTTP/1.1 plaintext, no pipelining)</text>')
        for i in range(5):
            y = top * i / 4
            parts.append(f'<text x="{x0 - 6}" y="{py(y) + 4}" text-anchor="end">{y:,.0f}</text>')
            parts.append(f'<line x1="{x0}" y1="{py(y)}" x2="{x0 + panel_w}" y2="{py(y)}" stroke="#ddd"/>')
        for n, (transport, values) in enumerate(points.items()):
            color = colors[n % len(colors)]
            coords = " ".join(f"{px(v[0]):.1f},{py(v[index] or 0):.1f}" for v in values)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
            for v in values:
                parts.append(f'<circle cx="{px(v[0]):.1f}" cy="{py(v[index] or 0):.1f}" r="3" fill="{color}"/>')
            parts.append(f'<text x="{x0 + 10}" y="{y1 + 14 + 16 * n}" fill="{color}">{transport_name(transport)}</text>')
    parts.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path


def ratio_bars(summary):
    """[(scenario, req/s ratio, CPU per request ratio)], io_uring ÷ Sockets, for every scenario outside
    the plaintext sweep that ran on both."""
    a_name, b_name = RATIO
    bars = []
    for scenario, by_transport in summary.items():
        if re.fullmatch(r"plaintext-\d+", scenario) or a_name not in by_transport or b_name not in by_transport:
            continue
        a, b = by_transport[a_name], by_transport[b_name]
        bars.append((scenario, ratio(a["rps"], b["rps"]), ratio(a["cpu_us_per_req"], b["cpu_us_per_req"])))
    return bars


RATIO_TITLE = "io_uring ÷ Sockets, medians (req/s: above 1 is better; CPU per request: below 1 is better)"


def draw_ratios(summary, out_dir):
    """One pair of bars per scenario outside the sweep: where the transports differ, at a glance."""
    bars = ratio_bars(summary)
    if not bars:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return draw_ratios_svg(bars, os.path.join(out_dir, "ratios.svg"))
    fig, axis = plt.subplots(figsize=(10, 0.45 * len(bars) + 1.5))
    ys = list(range(len(bars)))
    # Bars from 1 to the ratio on a log scale: 0.5 and 2 lie equally far from 1, either way.
    for offset, index, label in ((-0.2, 1, "requests/s"), (0.2, 2, "server CPU per request")):
        drawn = [(y + offset, b[index]) for y, b in zip(ys, bars) if b[index]]
        axis.barh([d[0] for d in drawn], [d[1] - 1 for d in drawn], left=1, height=0.4, label=label)
    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.axvline(1, color="black", linewidth=1)
    axis.set_yticks(ys)
    axis.set_yticklabels([b[0] for b in bars])
    axis.invert_yaxis()
    axis.set_title(RATIO_TITLE, fontsize=10)
    axis.grid(True, axis="x", alpha=0.3)
    axis.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, "ratios.png")
    fig.savefig(path, dpi=90)
    return path


def draw_ratios_svg(bars, path):
    width, left, row, top = 900, 160, 36, 50
    height = top + row * len(bars) + 40
    scale = (width - left - 40) / max(2.0, max((v or 0) for b in bars for v in b[1:]) * 1.1)
    colors = ("#1f77b4", "#ff7f0e")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="13">{RATIO_TITLE}</text>',
             f'<text x="{left}" y="38" fill="{colors[0]}">requests/s</text>',
             f'<text x="{left + 100}" y="38" fill="{colors[1]}">server CPU per request</text>']
    for i, (scenario, *values) in enumerate(bars):
        y = top + i * row
        parts.append(f'<text x="{left - 8}" y="{y + row / 2 + 4}" text-anchor="end">{scenario}</text>')
        for j, value in enumerate(values):
            parts.append(f'<rect x="{left}" y="{y + 4 + j * 14}" width="{(value or 0) * scale:.1f}" height="12" fill="{colors[j]}"/>')
            parts.append(f'<text x="{left + (value or 0) * scale + 4:.1f}" y="{y + 14 + j * 14}">{fmt_num(value, 2)}</text>')
    parts.append(f'<line x1="{left + scale}" y1="{top - 4}" x2="{left + scale}" y2="{height - 30}" stroke="black"/>')
    parts.append(f'<text x="{left + scale}" y="{height - 14}" text-anchor="middle">1</text>')
    parts.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path


def read_rings(raw_dir):
    """{(round, scenario, transport): "n0/n1/..."} from run.sh's rings.tsv, the last attempt of a pair
    measured again replacing the disturbed one; empty without the file or with one ring only."""
    kept = {}
    path = os.path.join(raw_dir, "rings.tsv")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if len(fields) == 4:
                    kept[(fields[0], fields[1], fields[2])] = fields[3]
    return kept if any("/" in per_ring for per_ring in kept.values()) else {}


def build(raw_dir, out_dir):
    meta = read_meta(raw_dir)
    rows = collect(raw_dir, int(meta.get("clk_tck", "100")), float(meta.get("max_other_pct", "10")))
    os.makedirs(out_dir, exist_ok=True)
    write_csv(rows, os.path.join(out_dir, "results.csv"))
    rings = read_rings(raw_dir)
    if rings:
        with open(os.path.join(out_dir, "rings.tsv"), "w", encoding="utf-8") as f:
            for key, per_ring in rings.items():
                f.write("\t".join(key + (per_ring,)) + "\n")
    summary = summarize(rows)
    write_markdown(summary, rows, meta, os.path.join(out_dir, "results.md"), rings)
    for chart in (draw_chart(summary, out_dir), draw_ratios(summary, out_dir)):
        if chart:
            print(f"chart: {chart}", file=sys.stderr)


def summary_line(path, kind, scenario=""):
    r = parse_run(path, kind)
    per = "msg/s" if unit(scenario) == "message" else "req/s"
    latency = "" if r.get("p50_ms") is None else f", p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms'] or 0:.2f} ms"
    more = ""
    if scenario.startswith("close-") and r.get("conns_per_s") is not None:
        more += f", {r['conns_per_s']:,.0f} connections/s accepted"
    if r.get("body_mib_s") is not None:
        more += f", {r['body_mib_s']:,.0f} MiB/s of bodies"
    errors = f", {r['errors']} errors" if r["errors"] else ""
    print(f"{r['rps']:,.0f} {per}{latency}{more}{errors}")


def main(argv):
    if len(argv) == 4 and argv[1] == "build":
        build(argv[2], argv[3])
    elif len(argv) in (4, 5) and argv[1] == "summary":
        summary_line(*argv[2:])
    elif len(argv) == 3 and argv[1] == "h2-percentiles":
        h2_percentiles(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
