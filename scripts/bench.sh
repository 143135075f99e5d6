#!/usr/bin/env bash
# Side-by-side benchmark: direct, HAProxy, nginx, Caddy and Portico, in interleaved rounds.
# Each proxy runs ONE worker pinned to core 0; the backend and the load generators share core 1.
# Reported per proxy and workload: throughput, p99, and the proxy's CPU time per operation (from
# /proc/PID/stat before and after, which holds even when the generator is the limit).
# Usage: scripts/bench.sh [ROUNDS] [SECONDS]      (defaults 3 and 5). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
bin=.build/release
work=$(mktemp -d)
results=bench/results.tsv
mkdir -p bench
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    pkill -f "$work" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# A proxy's processes: the ones started and their children (nginx's worker), looked up when measured.
tree() { local pid; for pid in $1; do echo "$pid"; pgrep -P "$pid" || true; done; }
ticks() { local total=0 pid; for pid in $(tree "$1"); do total=$((total + $(awk '{print $14+$15}' "/proc/$pid/stat"))); done; echo $total; }

backend_port=$(free_port)
taskset -c 1 "$bin/portico-testbackend" --listen "127.0.0.1:$backend_port" --name backend >/dev/null 2>&1 &
pids+=($!)
wait_port "$backend_port"

declare -A port proxy_pids
port[direct]=$backend_port

# HAProxy: one thread, HTTP mode (WebSocket upgrades pass through), keep-alive to the backend.
port[haproxy]=$(free_port)
cat >"$work/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 9990
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 300s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:${port[haproxy]}
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:$backend_port
CFG

# nginx: one worker, upstream keep-alive, WebSocket upgrade map.
port[nginx]=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CFG
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 19990; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    upstream be { server 127.0.0.1:$backend_port; keepalive 64; }
    server {
        listen 127.0.0.1:${port[nginx]};
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
        }
    }
}
CFG

# Caddy: one OS thread for Go code.
port[caddy]=$(free_port)
cat >"$work/Caddyfile" <<CFG
{
    admin off
    auto_https off
}
http://127.0.0.1:${port[caddy]} {
    reverse_proxy 127.0.0.1:$backend_port
}
CFG
port[portico]=$(free_port)

# Starts (or restarts) one proxy on core 0 and records its PIDs (nginx: master and worker).
start_proxy() {
    local name=$1
    stop_proxy "$name"
    case $name in
    haproxy) taskset -c 0 haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & ;;
    nginx) taskset -c 0 nginx -c "$work/nginx.conf" >/dev/null 2>&1 & ;;
    caddy) GOMAXPROCS=1 taskset -c 0 caddy run --config "$work/Caddyfile" --adapter caddyfile >/dev/null 2>&1 & ;;
    portico)
        taskset -c 0 "$bin/portico" proxy --listen "127.0.0.1:${port[portico]}" --to "127.0.0.1:$backend_port" \
            --workers 1 --log-level warning >/dev/null 2>&1 &
        ;;
    esac
    proxy_pids[$name]=$!
    pids+=($!)
    wait_port "${port[$name]}"
    sleep 0.3
    if [ "$name" = nginx ]; then  # nginx does the work in its worker process: wait for it to exist
        for _ in $(seq 100); do
            [ -n "$(pgrep -P "${proxy_pids[nginx]}")" ] && break
            sleep 0.05
        done
    fi
}
stop_proxy() {
    local pid all
    all=$(tree "${proxy_pids[$1]:-}")
    for pid in $all; do kill "$pid" 2>/dev/null || true; done
    for pid in $all; do while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; done
    proxy_pids[$1]=""
}
rss_kib() { local total=0 pid; for pid in $(tree "$1"); do total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status"))); done; echo $total; }

for name in haproxy nginx caddy portico; do start_proxy "$name"; done

idle_sockets=9900
echo -e "round\tproxy\tworkload\tops_per_s\tp99_ms\tcpu_us_per_op\tkib_per_socket" >"$results"
run() {  # run ROUND PROXY WORKLOAD
    local round=$1 name=$2 workload=$3 target=${port[$2]} before after ops p99 out memory="" operations
    # Memory per idle socket is measured on a fresh process: allocators keep freed memory, so a process
    # that held sockets before would understate it.
    if [ "$workload" = ws-idle ] && [ "$name" != direct ]; then start_proxy "$name"; fi
    if [ "$name" != direct ]; then before=$(ticks "${proxy_pids[$name]}"); fi
    case $workload in
    http-keepalive)
        out=$(taskset -c 1 wrk -t1 -c32 -d"${seconds}s" --latency "http://127.0.0.1:$target/" 2>&1)
        ops=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; print v}')
        ;;
    http-close)
        out=$(taskset -c 1 wrk -t1 -c32 -d"${seconds}s" --latency -H "Connection: close" "http://127.0.0.1:$target/" 2>&1)
        ops=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; print v}')
        ;;
    http-rate)
        # The same offered load for every target (hey's -q is per connection: 32 × 250 = 8,000 requests/s,
        # below every proxy's limit here), so p99 compares latency at equal load, not at each one's ceiling.
        out=$(taskset -c 1 hey -z "${seconds}s" -c 32 -q 250 "http://127.0.0.1:$target/" 2>&1)
        ops=$(echo "$out" | awk '/Requests\/sec:/ {print $2}')
        p99=$(echo "$out" | awk '$1=="99%" && $2=="in" {print $3 * 1000}')
        ;;
    ws-64|ws-4096)
        out=$(taskset -c 1 "$bin/portico-bench" ws-echo --target "127.0.0.1:$target" --connections 100 \
            --size "${workload#ws-}" --duration "$seconds" 2>&1 | tail -1)
        ops=$(echo "$out" | sed -n 's/.*messages\/s=\([0-9]*\).*/\1/p')
        p99=$(echo "$out" | sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p')
        ;;
    ws-connect)
        out=$(taskset -c 1 "$bin/portico-bench" ws-connect --target "127.0.0.1:$target" --concurrency 50 \
            --duration "$seconds" 2>&1 | tail -1)
        ops=$(echo "$out" | sed -n 's/.*handshakes\/s=\([0-9]*\).*/\1/p')
        p99=$(echo "$out" | sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p')
        ;;
    ws-idle)
        local rss_before="" rss_after=""
        if [ "$name" != direct ]; then rss_before=$(rss_kib "${proxy_pids[$name]}"); fi
        taskset -c 1 "$bin/portico-bench" ws-idle --target "127.0.0.1:$target" --connections "$idle_sockets" \
            --hold 3 >"$work/idle.out" 2>&1 &
        local generator=$!
        # ws-idle flushes its report line once every socket is open, then holds them for 3 s.
        for _ in $(seq 600); do grep -q "handshakes/s" "$work/idle.out" && break; sleep 0.1; done
        sleep 1
        if [ "$name" != direct ]; then rss_after=$(rss_kib "${proxy_pids[$name]}"); fi
        wait "$generator" || true
        out=$(grep "handshakes/s" "$work/idle.out")
        ops=$(echo "$out" | sed -n 's/.*handshakes\/s=\([0-9]*\).*/\1/p')
        p99=$(echo "$out" | sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p')
        local opened=$(echo "$out" | sed -n 's/.* open=\([0-9]*\).*/\1/p')
        if [ "$name" != direct ] && [ "${opened:-0}" -gt 0 ]; then
            memory=$(python3 -c "print(round(($rss_after-$rss_before)/$opened,2))")
        fi
        ;;
    esac
    local cpu=""
    if [ "$name" != direct ] && [ "$workload" != ws-idle ]; then
        after=$(ticks "${proxy_pids[$name]}")
        # ticks are 10 ms; a WebSocket echo crosses the proxy twice (one message each way).
        local factor=1
        case $workload in ws-64 | ws-4096) factor=2 ;; esac
        cpu=$(python3 -c "print(round(($after-$before)*10000/(max(float('${ops:-0}'),1)*$seconds*$factor),2))")
    fi
    echo -e "$round\t$name\t$workload\t${ops:-0}\t${p99:-}\t$cpu\t$memory" | tee -a "$results"
}

for round in $(seq "$rounds"); do
    # Forward in odd rounds, backward in even ones, after a pause: every proxy is pinned to core 0, and one's
    # background work after its run (Go's runtime in Caddy) must not always land on the same next target.
    order=(direct haproxy nginx caddy portico)
    if ((round % 2 == 0)); then order=(portico caddy nginx haproxy direct); fi
    for workload in ${WORKLOADS:-http-keepalive http-close http-rate ws-64 ws-4096 ws-connect ws-idle}; do
        for name in "${order[@]}"; do
            sleep 1
            run "$round" "$name" "$workload"
        done
    done
done
python3 scripts/bench_report.py "$results" bench/cpu-per-operation.png >bench/BENCHMARKS.generated.md
echo "wrote $results, bench/BENCHMARKS.generated.md and bench/cpu-per-operation.png"
