#!/usr/bin/env python3
"""Medians, min–max and ratios (vs HAProxy and nginx) from bench/results.tsv, as Markdown tables.

Usage: bench_report.py RESULTS.tsv [CHART.png]   (the chart needs matplotlib; without it, tables only)
"""
import csv
import statistics
import sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
data = defaultdict(lambda: defaultdict(list))
for row in rows:
    for key in ("ops_per_s", "p99_ms", "cpu_us_per_op", "kib_per_socket"):
        if row.get(key):
            data[(row["workload"], row["proxy"])][key].append(float(row[key]))
workloads = ["http-keepalive", "http-close", "ws-64", "ws-4096", "ws-connect", "ws-idle"]
# Rows of the full table only: the same offered load for every target, to compare latency rather than cost.
equal_load = ["http-rate"]
labels = {
    "http-keepalive": "HTTP keep-alive request",
    "http-close": "HTTP request on a new connection",
    "ws-64": "WebSocket 64 B message",
    "ws-4096": "WebSocket 4 KiB message",
    "ws-connect": "WebSocket handshake",
    "ws-idle": "idle WebSocket (9,900 open)",
}
proxies = ["direct", "haproxy", "nginx", "caddy", "portico"]
anchors = ["haproxy", "nginx", "caddy"]
rounds = len({row["round"] for row in rows})


def median(workload, proxy, key):
    values = data.get((workload, proxy), {}).get(key)
    return statistics.median(values) if values else None


def spread(values, digits):
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


print(f"Medians of {rounds} interleaved rounds, (min–max) in brackets.\n")
print("| workload | proxy | ops/s | p99 ms | proxy CPU µs/op | CPU vs HAProxy | CPU vs nginx | KiB per idle socket |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for workload in workloads + equal_load:
    for proxy in proxies:
        values = data.get((workload, proxy))
        if not values:
            continue
        cpu = values.get("cpu_us_per_op", [])
        memory = values.get("kib_per_socket", [])

        def ratio(other, key="cpu_us_per_op"):
            mine, theirs = median(workload, proxy, key), median(workload, other, key)
            return f"{mine / theirs:.2f}×" if mine is not None and theirs else ""

        p99 = median(workload, proxy, "p99_ms")
        print(
            f"| {workload} | {proxy} | {spread(values['ops_per_s'], 0)} | {p99 if p99 is not None else float('nan'):.2f} "
            f"| {spread(cpu, 1) if cpu else '—'} | {ratio('haproxy')} | {ratio('nginx')} "
            f"| {spread(memory, 1) if memory else '—'} |"
        )

# Portico against the best anchor, row by row: the goal is ≤ 1.00×.
print("\n| per operation | HAProxy | nginx | Caddy | Portico | Portico ÷ best |")
print("| --- | --- | --- | --- | --- | --- |")
for workload in workloads:
    key = "kib_per_socket" if workload == "ws-idle" else "cpu_us_per_op"
    unit = "KiB" if workload == "ws-idle" else "µs"
    cells = [median(workload, proxy, key) for proxy in anchors + ["portico"]]
    known = [value for value in cells[:3] if value]
    best = min(known) if known else None
    text = [f"{value:.1f} {unit}" if value is not None else "—" for value in cells]
    ratio = f"{cells[3] / best:.2f}×" if cells[3] is not None and best else ""
    print(f"| {labels[workload]} | {' | '.join(text)} | {ratio} |")

# Latency at the same offered load (`http-rate`: every target gets the same request rate).
if any((workload, proxy) in data for workload in equal_load for proxy in proxies):
    print("\n| HTTP keep-alive at the same load | " + " | ".join(proxies) + " | Portico ÷ HAProxy |")
    print("| --- | " + " | ".join("---" for _ in proxies) + " | --- |")
    for key, name in (("p99_ms", "p99 ms"), ("ops_per_s", "requests/s")):
        cells = [median("http-rate", proxy, key) for proxy in proxies]
        text = [f"{value:,.2f}" if value is not None else "—" for value in cells]
        mine, theirs = cells[proxies.index("portico")], cells[proxies.index("haproxy")]
        ratio = f"{mine / theirs:.2f}×" if key == "p99_ms" and mine is not None and theirs else ""
        print(f"| {name} | {' | '.join(text)} | {ratio} |")

if len(sys.argv) > 2:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib is missing: no chart)", file=sys.stderr)
        sys.exit(0)
    shown = ["haproxy", "nginx", "caddy", "portico"]
    colors = {"haproxy": "#4C72B0", "nginx": "#55A868", "caddy": "#8172B2", "portico": "#DD8452"}
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    for axis, workload in zip(axes.flat, workloads):
        key = "kib_per_socket" if workload == "ws-idle" else "cpu_us_per_op"
        heights = [median(workload, proxy, key) or 0 for proxy in shown]
        bars = axis.bar(shown, heights, color=[colors[p] for p in shown])
        for proxy, bar in zip(shown, bars):
            values = data.get((workload, proxy), {}).get(key)
            if values:
                axis.vlines(bar.get_x() + bar.get_width() / 2, min(values), max(values), color="black", linewidth=1)
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
        axis.set_title(labels[workload], fontsize=10)
        axis.set_ylabel("KiB per socket" if workload == "ws-idle" else "proxy CPU µs per operation", fontsize=8)
        axis.tick_params(labelsize=8)
    figure.suptitle(f"Proxy cost per operation, one worker on one core (median of {rounds} rounds, lines: min–max)")
    figure.tight_layout()
    figure.savefig(sys.argv[2], dpi=100)
