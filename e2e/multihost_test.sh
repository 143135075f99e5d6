#!/usr/bin/env bash
# Balancer, Redis and three chat nodes on five "hosts": network namespaces joined by veth pairs to one
# bridge, so traffic crosses real interfaces as it does between containers. Skips (exit 0, with the reason)
# where namespaces cannot be made. Uses the release binaries (make build).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(pwd)/.build/release
net=10.203.0
bridge=ptbr0
hosts=(pt-redis pt-chat1 pt-chat2 pt-chat3 pt-lb)
addresses=(10 11 12 13 20)
passed=0
failed=0
check() { if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi; }

cleanup() {
    for host in "${hosts[@]}"; do
        ip netns pids "$host" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$host" 2>/dev/null
    done
    ip link del "$bridge" 2>/dev/null
    true
}

if ! ip netns add pt-probe 2>/dev/null; then
    echo "multihost: skipped: cannot create network namespaces here (needs root / CAP_NET_ADMIN)"
    exit 0
fi
ip netns del pt-probe
cleanup
trap cleanup EXIT

ip link add "$bridge" type bridge && ip addr add "$net.1/24" dev "$bridge" && ip link set "$bridge" up
for index in "${!hosts[@]}"; do
    host=${hosts[$index]}
    ip netns add "$host"
    ip link add "v-$host" type veth peer name eth0 netns "$host"
    ip link set "v-$host" master "$bridge" up
    ip -n "$host" addr add "$net.${addresses[$index]}/24" dev eth0
    ip -n "$host" link set eth0 up
    ip -n "$host" link set lo up
done

ip netns exec pt-redis redis-server --bind "$net.10" --port 6379 --protected-mode no --save "" --appendonly no \
    >/dev/null 2>&1 &
sleep 0.5
for node in 1 2 3; do
    ip netns exec "pt-chat$node" "$bin/portico-chat" --listen "0.0.0.0:9000" --node-id "chat-$node" \
        --redis "redis://$net.10:6379" --service chat --advertise "$net.1$node:9000" >/dev/null 2>&1 &
done
config=$(mktemp)
cat >"$config" <<YAML
listeners: [{ address: "0.0.0.0:8080" }]
admin: { address: "127.0.0.1:9901" }
routes: [{ pool: chat, websocket: { idle_timeout: 60s } }]
pools:
  chat:
    policy: consistent_hash
    hash_key: "query:client,ip"
    health: { path: /healthz, interval: 500ms, timeout: 300ms, rise: 1, fall: 2 }
    discovery: { redis: { url: "redis://$net.10:6379", service: chat } }
YAML
ip netns exec pt-lb "$bin/portico" run --config "$config" --log-level warning >/dev/null 2>&1 &

status=""
for _ in $(seq 100); do
    status=$(ip netns exec pt-lb curl -fsS http://127.0.0.1:9901/status 2>/dev/null || true)
    [ "$(echo "$status" | grep -o '"state":"up"' | wc -l)" -eq 3 ] && break
    sleep 0.1
done
echo "$status" | grep -q "\"address\":\"$net.11:9000\"" && echo "$status" | grep -q "\"address\":\"$net.13:9000\""
check "portico (on $net.20) discovered the three nodes at their own addresses through Redis (on $net.10)" $?

# Clients from the bridge (another host), to the balancer's address.
first="" ; second="" ; firstclient="" ; secondclient=""
for id in a b c d e f g h i j; do
    node=$(WS_SECONDS=0.5 python3 e2e/ws_client.py "$net.20" 8080 "$id" probe | grep -o '"node":"chat-[0-9]"' | head -1)
    if [ -z "$first" ]; then first=$node; firstclient=$id
    elif [ "$node" != "$first" ]; then second=$node; secondclient=$id; break; fi
done
[ -n "$second" ]; check "two clients land on different nodes ($first, $second)" $?

WS_SECONDS=4 python3 e2e/ws_client.py "$net.20" 8080 "$secondclient" bob >"$config.bob" &
listener=$!
sleep 0.5
WS_SECONDS=4 python3 e2e/ws_client.py "$net.20" 8080 "$firstclient" alice "hello across hosts" >"$config.alice"
wait $listener
grep -q '"text":"hello across hosts"' "$config.bob"; check "a message crosses hosts: alice's node → Redis → bob's node" $?
rm -f "$config" "$config.bob" "$config.alice"

echo
echo "multihost: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
