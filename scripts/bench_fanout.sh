#!/usr/bin/env bash
# Chat fan-out through the balancer: Redis + three portico-chat nodes + portico (the demo topology), and
# `portico-bench fanout` with R rooms × M members. First a ladder of publish rates finds where the chat nodes
# saturate (deliveries stop keeping up, p99 passes 100 ms, or messages go missing), then runs at 10% and 50%
# of that rate report throughput, latency and CPU per delivered message (chat nodes, Redis, portico).
# Usage: scripts/bench_fanout.sh [ROOMS] [MEMBERS] [SECONDS]   (defaults 10, 20, 5). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
rooms=${1:-10}
members=${2:-20}
seconds=${3:-5}
bin=.build/release
work=$(mktemp -d)
mkdir -p bench
results=bench/fanout.tsv
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

export DEMO_PORT=$(free_port) DEMO_ADMIN_PORT=$(free_port) DEMO_REDIS_PORT=$(free_port)
redis-server --port "$DEMO_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"bench/fanout-redis.log" 2>&1 &
redis_pid=$!
pids+=($!)
wait_port "$DEMO_REDIS_PORT"
chat_pids=()
for index in 1 2 3; do
    port=$(free_port)
    "$bin/portico-chat" --listen "127.0.0.1:$port" --node-id "chat-$index" \
        --redis "redis://127.0.0.1:$DEMO_REDIS_PORT" --service chat >"bench/fanout-chat-$index.log" 2>&1 &
    chat_pids+=($!)
    pids+=($!)
done
"$bin/portico" run --config examples/demo.yml --log-level warning >"bench/fanout-portico.log" 2>&1 &
portico_pid=$!
pids+=($!)
for _ in $(seq 100); do
    [ "$(curl -fsS "http://127.0.0.1:$DEMO_ADMIN_PORT/status" 2>/dev/null | grep -o '"state":"up"' | wc -l)" -ge 3 ] && break
    sleep 0.1
done

echo -e "rate\tpublished\tdeliveries_per_s\tp50_ms\tp99_ms\tp999_ms\tmissing\tduplicates\tchat_us\tredis_us\tportico_us" >"$results"
run() {  # run RATE -> one line in $results, and "ok" or "saturated" on stdout
    local rate=$1 out
    # CPU is read by the generator over the publishing phase only (not connecting and joining).
    local chat_list
    chat_list=$(IFS=,; echo "${chat_pids[*]}")
    out=$("$bin/portico-bench" fanout --target "127.0.0.1:$DEMO_PORT" --rooms "$rooms" --members "$members" \
        --rate "$rate" --duration "$seconds" --cpu "chat=$chat_list" --cpu "redis=$redis_pid" \
        --cpu "portico=$portico_pid" 2>&1) || true
    python3 - "$rate" "$out" "$results" <<'PY'
import re, sys
rate, out, results = sys.argv[1:]
def field(name):
    match = re.search(rf"(?:^|\s){re.escape(name)}=([0-9.]+)", out, re.M)
    return float(match.group(1)) if match else 0.0
delivered = re.search(r"deliveries=(\d+)/(\d+)", out)
got, expected = (int(delivered.group(1)), int(delivered.group(2))) if delivered else (0, 1)
row = [rate, int(field("published")), int(field("deliveries/s")), field("p50"), field("p99"), field("p99.9"),
       int(field("missing")), int(field("duplicates")), field("chat"), field("redis"), field("portico")]
open(results, "a").write("\t".join(map(str, row)) + "\n")
saturated = got < 0.95 * expected or field("p99") > 100 or field("missing") > 0 or not delivered
print("saturated" if saturated else "ok")
print(f"rate={rate}/s: {out.splitlines()[-1] if out else 'no output'}", file=sys.stderr)
PY
}

# The ladder: double the rate until the chat nodes stop keeping up.
rate=100
last_ok=0
while [ "$rate" -le 51200 ]; do
    verdict=$(run "$rate")
    [ "$verdict" = saturated ] && break
    last_ok=$rate
    rate=$((rate * 2))
done
saturation=$((last_ok > 0 ? last_ok : 100))
echo "saturation: about $saturation messages/s published ($((saturation * members)) deliveries/s)"
for share in 10 50; do
    load=$((saturation * share / 100))
    [ "$load" -lt 1 ] && load=1
    echo -e "# ${share}% of saturation" >>"$results"
    run "$load" >/dev/null
done
python3 - "$results" "$saturation" "$rooms" "$members" >bench/FANOUT.generated.md <<'PY'
import sys
path, saturation, rooms, members = sys.argv[1:]
lines = open(path).read().splitlines()
print(f"{rooms} rooms × {members} members over 3 chat nodes behind portico; saturation ≈ {saturation} published/s.\n")
print("| run | published/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | missing | duplicates | chat CPU µs/delivery | Redis CPU µs/delivery | portico CPU µs/delivery |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
label = "ladder"
for line in lines[1:]:
    if line.startswith("#"):
        label = line[2:]
        continue
    cells = line.split("\t")
    print(f"| {label} | " + " | ".join(cells[:1] + cells[2:]) + " |")
PY
cat bench/FANOUT.generated.md
