#!/usr/bin/env bash
# The relay through a local redis-server, next to redis-benchmark's PUBLISH rate in the same run:
# `portico-bench relay` (two relays in one process, every message checked) at full speed and at 10,000/s.
# Redis on core 1, the generator on core 0. Writes bench/RELAY.generated.md. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release
mkdir -p bench
messages=${1:-100000}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 1 redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
payload=$(python3 -c 'print("x" * 64)')
publish=$(taskset -c 0 redis-benchmark -p "$port" -n 200000 -q -d 64 PUBLISH bench "$payload" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)
pipelined=$(taskset -c 0 redis-benchmark -p "$port" -n 1000000 -P 16 -q PUBLISH bench "$payload" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)
# The relays' own CPU per message: the generator process holds both relays (publisher and receiver), so its
# user+system time over the messages is what the relay costs, end to end, on both sides.
full=$(python3 - "$bin/portico-bench" "$port" "$messages" <<'PY'
import resource, subprocess, sys
binary, port, messages = sys.argv[1:]
out = subprocess.run(["taskset", "-c", "0", binary, "relay", "--redis", f"redis://127.0.0.1:{port}",
                      "--messages", messages, "--size", "64"], capture_output=True, text=True).stdout
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (usage.ru_utime + usage.ru_stime) * 1e6 / int(messages)
print(f"{out.strip().splitlines()[-1]} relay_cpu_us_per_message={cpu:.1f}")
PY
)
# The same through the NIO-level entry (Relay.broadcastOnEventLoop from the relay's own loop, 256 a tick).
onloop=$(python3 - "$bin/portico-bench" "$port" "$messages" <<'PY'
import resource, subprocess, sys
binary, port, messages = sys.argv[1:]
out = subprocess.run(["taskset", "-c", "0", binary, "relay", "--redis", f"redis://127.0.0.1:{port}",
                      "--messages", messages, "--size", "64", "--entry", "loop"], capture_output=True, text=True).stdout
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (usage.ru_utime + usage.ru_stime) * 1e6 / int(messages)
print(f"{out.strip().splitlines()[-1]} relay_cpu_us_per_message={cpu:.1f}")
PY
)
paced=$(taskset -c 0 "$bin/portico-bench" relay --redis "redis://127.0.0.1:$port" --messages 50000 --size 64 --rate 10000 | tail -1)
{
    echo "| run | result |"
    echo "| --- | --- |"
    echo "| redis-benchmark PUBLISH, 64 B, 50 clients | $publish |"
    echo "| redis-benchmark PUBLISH, 64 B, pipelined -P 16 | $pipelined |"
    echo "| portico-bench relay, $messages × 64 B, full speed (async broadcast, one at a time) | $full |"
    echo "| portico-bench relay, $messages × 64 B, full speed (broadcastOnEventLoop, 256 a tick) | $onloop |"
    echo "| portico-bench relay, 50,000 × 64 B at 10,000/s | $paced |"
} >bench/RELAY.generated.md
cat bench/RELAY.generated.md
