#!/usr/bin/env bash
# Redis + three chat nodes + portico, on this machine. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release
export DEMO_PORT=${DEMO_PORT:-8080} DEMO_ADMIN_PORT=${DEMO_ADMIN_PORT:-9901} DEMO_REDIS_PORT=${DEMO_REDIS_PORT:-6390}
node_ports=(${DEMO_NODE_PORTS:-9001 9002 9003})

for port in "$DEMO_PORT" "$DEMO_ADMIN_PORT" "$DEMO_REDIS_PORT" "${node_ports[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "error: port $port is in use. Pick others, for example:" >&2
        echo "  DEMO_PORT=18080 DEMO_ADMIN_PORT=19901 DEMO_REDIS_PORT=16390 DEMO_NODE_PORTS='19001 19002 19003' make demo" >&2
        exit 1
    fi
done

mkdir -p run
pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo stopped"
}
trap cleanup INT TERM EXIT

redis-server --port "$DEMO_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >run/redis.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$DEMO_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

for index in 0 1 2; do
    node="chat-$((index + 1))"
    "$bin/portico-chat" --listen "127.0.0.1:${node_ports[$index]}" --node-id "$node" \
        --redis "redis://127.0.0.1:$DEMO_REDIS_PORT" --service chat >"run/$node.log" 2>&1 &
    pids+=($!)
done

"$bin/portico" check --config examples/demo.yml
"$bin/portico" run --config examples/demo.yml >run/portico.log 2>&1 &
pids+=($!)

for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$DEMO_PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
echo
echo "  Chat:          http://127.0.0.1:$DEMO_PORT/      (open it in two tabs: they land on different nodes)"
echo "  Status page:   http://127.0.0.1:$DEMO_ADMIN_PORT/     (pools, backends, sockets; JSON at /status, /metrics)"
echo "  Logs:          run/*.log"
echo "  Try a rolling restart:  kill $(echo "${pids[1]}") (chat-1): its clients get Close 1012 and reconnect elsewhere."
echo "  Ctrl-C stops everything."
wait
