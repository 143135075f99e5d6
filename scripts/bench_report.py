#!/usr/bin/env python3
"""Medians, min–max and ratios (vs HAProxy and nginx) from bench/results.tsv, as a Markdown table."""
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
data = defaultdict(lambda: defaultdict(list))
for row in rows:
    for key in ("ops_per_s", "p99_ms", "cpu_us_per_op"):
        if row[key]:
            data[(row["workload"], row["proxy"])][key].append(float(row[key]))
workloads = ["http-keepalive", "http-close", "ws-64", "ws-4096"]
proxies = ["direct", "haproxy", "nginx", "caddy", "portico"]
print("| workload | proxy | ops/s median (min–max) | p99 ms | proxy CPU µs/op median (min–max) | CPU vs HAProxy | CPU vs nginx |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for workload in workloads:
    for proxy in proxies:
        values = data.get((workload, proxy))
        if not values:
            continue
        ops = values["ops_per_s"]
        cpu = values.get("cpu_us_per_op", [])
        def ratio(other):
            base = data.get((workload, other), {}).get("cpu_us_per_op")
            return f"{statistics.median(cpu) / statistics.median(base):.2f}×" if cpu and base else ""
        cpu_text = f"{statistics.median(cpu):.1f} ({min(cpu):.1f}–{max(cpu):.1f})" if cpu else "—"
        p99 = statistics.median(values["p99_ms"]) if values.get("p99_ms") else float("nan")
        print(f"| {workload} | {proxy} | {statistics.median(ops):,.0f} ({min(ops):,.0f}–{max(ops):,.0f}) | {p99:.2f} | {cpu_text} | {ratio('haproxy')} | {ratio('nginx')} |")
