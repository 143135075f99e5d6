#!/usr/bin/env bash
# Starts two test backends and portico in front of them; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release
export DEMO_PORT=${DEMO_PORT:-8080} DEMO_BACKEND_1=${DEMO_BACKEND_1:-9001} DEMO_BACKEND_2=${DEMO_BACKEND_2:-9002}

for port in "$DEMO_PORT" "$DEMO_BACKEND_1" "$DEMO_BACKEND_2"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "error: port $port is in use; pick others, e.g. DEMO_PORT=18080 DEMO_BACKEND_1=19001 DEMO_BACKEND_2=19002 make demo" >&2
        exit 1
    fi
done

pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo stopped"
}
trap cleanup INT TERM EXIT

"$bin/portico-testbackend" --listen "127.0.0.1:$DEMO_BACKEND_1" --name web-1 & pids+=($!)
"$bin/portico-testbackend" --listen "127.0.0.1:$DEMO_BACKEND_2" --name web-2 & pids+=($!)
"$bin/portico" check --config examples/demo.yml
"$bin/portico" run --config examples/demo.yml & pids+=($!)

for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$DEMO_PORT/" >/dev/null 2>&1 && break
    sleep 0.1
done
echo
echo "Portico is up:  http://127.0.0.1:$DEMO_PORT/      (round robin, weights 2:1 over web-1 and web-2)"
echo "                http://127.0.0.1:$DEMO_PORT/api/x (least connections, /api stripped)"
echo "Try:            for i in 1 2 3; do curl -s http://127.0.0.1:$DEMO_PORT/ | head -1; done"
echo "Ctrl-C stops the demo."
wait
