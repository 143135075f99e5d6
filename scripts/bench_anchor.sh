#!/usr/bin/env bash
# The relay against its anchor, in one run: two portico-chat nodes and two python-socketio nodes
# (AsyncRedisManager on aiohttp, scripts/socketio_node.py), each pair on one redis-server, the same clients:
# one room, M members spread over the two nodes, the publisher on the first. Each system is ramped to its own
# maximum (doubling the publish rate until deliveries fall behind, p99 passes 100 ms or a message is missing),
# then held at 50% of it. CPU = the two node processes' user+system time per delivery over the publishing
# phase. Writes bench/ANCHOR.generated.md. Usage: scripts/bench_anchor.sh [MEMBERS] [SECONDS] (20, 5).
set -euo pipefail
cd "$(dirname "$0")/.."
members=${1:-20}
seconds=${2:-5}
bin=.build/release
mkdir -p bench
results=bench/anchor.tsv
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
python3 -c 'import socketio, aiohttp, redis' 2>/dev/null || python3 -m pip install --quiet python-socketio aiohttp redis \
    || python3 -m pip install --quiet --break-system-packages python-socketio aiohttp redis

echo -e "system\trun\trate\tdeliveries_per_s\tp50_ms\tp99_ms\tmissing\tduplicates\tnode_us_per_delivery" >"$results"

# run SYSTEM LABEL RATE TARGETS PROTOCOL NODE_PIDS -> a row in $results; "ok" or "saturated" on stdout
run() {
    local system=$1 label=$2 rate=$3 targets=$4 protocol=$5 node_pids=$6 out
    out=$("$bin/portico-bench" fanout --target "$targets" --protocol "$protocol" --rooms 1 --members "$members" \
        --rate "$rate" --duration "$seconds" --cpu "nodes=$node_pids" 2>&1) || true
    python3 - "$system" "$label" "$rate" "$out" "$results" <<'PY'
import re, sys
system, label, rate, out, results = sys.argv[1:]
def field(name):
    match = re.search(rf"(?:^|\s){re.escape(name)}=([0-9.]+)", out, re.M)
    return float(match.group(1)) if match else 0.0
delivered = re.search(r"deliveries=(\d+)/(\d+)", out)
got, expected = (int(delivered.group(1)), int(delivered.group(2))) if delivered else (0, 1)
row = [system, label, rate, int(field("deliveries/s")), field("p50"), field("p99"), int(field("missing")),
       int(field("duplicates")), field("nodes")]
open(results, "a").write("\t".join(map(str, row)) + "\n")
saturated = got < 0.95 * expected or field("p99") > 100 or field("missing") > 0 or not delivered
print("saturated" if saturated else "ok")
print(f"{system} rate={rate}/s: {out.splitlines()[-1] if out else 'no output'}", file=sys.stderr)
PY
}

# measure SYSTEM PROTOCOL START_RATE TARGETS NODE_PIDS: the ladder, then 50% of the last rate that kept up.
measure() {
    local system=$1 protocol=$2 rate=$3 targets=$4 node_pids=$5 last_ok=0
    while [ "$rate" -le 256000 ]; do
        [ "$(run "$system" ladder "$rate" "$targets" "$protocol" "$node_pids")" = saturated ] && break
        last_ok=$rate
        rate=$((rate * 2))
    done
    [ "$last_ok" -gt 0 ] || last_ok=$3
    run "$system" "50% of max" $((last_ok / 2)) "$targets" "$protocol" "$node_pids" >/dev/null
    echo -e "$system\tmax\t$last_ok" >>"$results.max"
}
rm -f "$results.max"

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
pids+=($!)
wait_port "$redis_port"

# portico-chat
ports=() node_pids=()
for node in a b; do
    port=$(free_port)
    "$bin/portico-chat" --listen "127.0.0.1:$port" --node-id "chat-$node" --redis "redis://127.0.0.1:$redis_port" \
        >"bench/anchor-chat-$node.log" 2>&1 &
    pids+=($!) node_pids+=($!) ports+=("$port")
done
for port in "${ports[@]}"; do wait_port "$port"; done
measure portico-chat portico 1000 "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}" "${node_pids[0]},${node_pids[1]}"
kill "${node_pids[@]}" 2>/dev/null || true

# python-socketio
ports=() node_pids=()
for node in a b; do
    port=$(free_port)
    python3 scripts/socketio_node.py "$port" "redis://127.0.0.1:$redis_port" "sio-$node" \
        >"bench/anchor-socketio-$node.log" 2>&1 &
    pids+=($!) node_pids+=($!) ports+=("$port")
done
for port in "${ports[@]}"; do wait_port "$port"; done
measure python-socketio socketio 50 "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}" "${node_pids[0]},${node_pids[1]}"

python3 - "$results" "$members" >bench/ANCHOR.generated.md <<'PY'
import sys
path, members = sys.argv[1:]
rows = [line.split("\t") for line in open(path).read().splitlines()[1:]]
maxima = dict(line.split("\t")[::2] for line in open(path + ".max").read().splitlines())
print(f"1 room × {members} members over 2 nodes and one redis-server; publisher on the first node.\n")
print("| system | run | published/s | deliveries/s | p50 ms | p99 ms | missing | duplicates | node CPU µs/delivery |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for row in rows:
    print("| " + " | ".join(row) + " |")
half = {row[0]: row for row in rows if row[1] == "50% of max"}
best = {}
for row in rows:
    if row[1] == "ladder" and int(row[2]) <= int(maxima.get(row[0], 0)):
        best[row[0]] = max(best.get(row[0], 0), int(row[3]))
p, s = half.get("portico-chat"), half.get("python-socketio")
if p and s and float(p[8]) > 0:
    print(f"\nAt 50% of each one's maximum: python-socketio spends {float(s[8]) / float(p[8]):.1f}× portico-chat's "
          f"node CPU per delivery ({s[8]} vs {p[8]} µs). Maximum held: portico-chat "
          f"{best.get('portico-chat', 0):,} deliveries/s, python-socketio {best.get('python-socketio', 0):,} "
          f"({best.get('portico-chat', 0) / max(best.get('python-socketio', 1), 1):.1f}×).")
    cores = float(p[8]) * int(p[3]) / 1e6
    print(f"portico-chat's two nodes at 50% used {cores:.2f} cores in all (the generator shares the same 2 cores).")
PY
cat bench/ANCHOR.generated.md
