#!/usr/bin/env bash
# The documented command line, tried as a user would: portico check / version / proxy / run.
# Usage: scripts/cli-tests.sh path/to/portico
set -uo pipefail
cd "$(dirname "$0")/.."
portico=${1:-.build/debug/portico}
backend=$(dirname "$portico")/portico-testbackend
passed=0
failed=0
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

check() {  # check NAME CONDITION-EXIT-CODE
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

out=$("$portico" check --config examples/demo.yml 2>&1); code=$?
[ $code -eq 0 ] && [ "$out" = "configuration OK" ]; check "check accepts examples/demo.yml" $?

out=$("$portico" check --config Tests/cli/bad.yml 2>&1); code=$?
[ $code -eq 1 ]; check "check exits 1 on a bad file" $?
echo "$out" | grep -q 'bad.yml:2:14: listeners\[0\].address: expected host:port'; check "check names key and line:column for a bad address" $?
echo "$out" | grep -q 'bad.yml:8:5: pools.api.polcy: unknown key (did you mean "policy"?)'; check "check names an unknown key" $?
echo "$out" | grep -q 'pools.api.connect_timeout: expected a duration'; check "check names a bad duration" $?
echo "$out" | grep -q 'routes\[0\].pool: no pool named "missing"'; check "check names an unknown pool" $?
[ "$(echo "$out" | wc -l)" -ge 5 ]; check "check prints every error" $?

out=$("$portico" check --config "$work/nope.yml" 2>&1); code=$?
[ $code -eq 1 ] && echo "$out" | grep -q "cannot read"; check "check reports an unreadable file" $?

out=$("$portico" version); [ "${out#portico }" != "$out" ]; check "version prints portico VERSION" $?

out=$("$portico" proxy --listen 127.0.0.1:1 --policy nope 2>&1); code=$?
[ $code -ne 0 ] && echo "$out" | grep -q -- "--to" && echo "$out" | grep -q "unknown policy"; check "proxy refuses bad arguments" $?

# A real run: two backends, portico proxy in front, requests through it.
p1=$(free_port); p2=$(free_port); pp=$(free_port)
"$backend" --listen "127.0.0.1:$p1" --name one >/dev/null 2>&1 & pids+=($!)
"$backend" --listen "127.0.0.1:$p2" --name two >/dev/null 2>&1 & pids+=($!)
"$portico" proxy --listen "127.0.0.1:$pp" --to "127.0.0.1:$p1" --to "127.0.0.1:$p2" --workers 1 --log-format json \
    >"$work/proxy.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$pp/" >/dev/null 2>&1 && break; sleep 0.1; done
seen=$(for _ in 1 2 3 4; do curl -fsS "http://127.0.0.1:$pp/x"; done | grep '^backend:' | sort | uniq -c | wc -l)
[ "$seen" -eq 2 ]; check "proxy round-robins over both backends" $?
grep -q '"portico.status":"200"' "$work/proxy.log"; check "--log-format json writes JSON access lines" $?

# Two portico processes with the same backends pin every room alike (stable hashing, no per-process seed).
p3=$(free_port); pa=$(free_port); pb=$(free_port)
"$backend" --listen "127.0.0.1:$p3" --name three >/dev/null 2>&1 & pids+=($!)
for port in "$pa" "$pb"; do
    "$portico" proxy --listen "127.0.0.1:$port" --to "127.0.0.1:$p1" --to "127.0.0.1:$p2" --to "127.0.0.1:$p3" \
        --policy consistent_hash --hash-key query:room --workers 1 --log-level warning >/dev/null 2>&1 & pids+=($!)
done
for port in "$pa" "$pb"; do
    for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
done
same=0
for room in $(seq 1 30); do
    a=$(curl -fsS "http://127.0.0.1:$pa/?room=r$room" | grep '^backend:')
    b=$(curl -fsS "http://127.0.0.1:$pb/?room=r$room" | grep '^backend:')
    [ -n "$a" ] && [ "$a" = "$b" ] && same=$((same + 1))
done
[ "$same" -eq 30 ]; check "two portico processes pin 30 rooms to the same backends" $?

# portico run with a file, SIGTERM exits 0
cat >"$work/run.yml" <<YAML
listeners: [{ address: "127.0.0.1:$(free_port)" }]
routes: [{ pool: p }]
pools: { p: { backends: [{ address: "127.0.0.1:$p1" }] } }
YAML
"$portico" run --config "$work/run.yml" >"$work/run.log" 2>&1 &
run_pid=$!
sleep 1
kill -TERM "$run_pid"
for _ in $(seq 50); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.1; done
wait "$run_pid"; code=$?
[ $code -eq 0 ]; check "run exits 0 on SIGTERM" $?

echo
echo "cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
