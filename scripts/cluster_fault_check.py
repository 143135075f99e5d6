#!/usr/bin/env python3
# From the outside: a 3-master Redis Cluster (ports 7101-7103, data in /tmp/cl), three portico-chat nodes (release
# build, ports 9201-9203, each given all three masters as --redis seeds), and `kill -9` of the master every node
# names first, for 10 s, under a stream of 50 messages/s into three rooms on three shards. Prints, per room and
# receiving node, the messages that arrived, whether in order, duplicates and the longest gap, and /healthz of every
# node during the kill. Needs redis-server, redis-cli and `pip install websockets`. Usage:
#   swift build -c release --product portico-chat && python3 scripts/cluster_fault_check.py [--hang]
# --hang: SIGSTOP the master instead (a hung Redis: connections stay open, nothing answers), SIGCONT after 10 s.
import asyncio, json, os, signal, subprocess, sys, time, shutil, urllib.request
HANG = "--hang" in sys.argv
import websockets
CHAT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".build", "release", "portico-chat")
PORTS = [7101, 7102, 7103]; NODES = [9201, 9202, 9203]
def redis(port):
    d = f"/tmp/cl/r{port}"; os.makedirs("/tmp/cl", exist_ok=True); shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", d], stdout=subprocess.DEVNULL)
def cli(*args, port=7101):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout
def owner(room):
    slot = int(cli("CLUSTER", "KEYSLOT", f"portico:v1:room:{room}"))
    for line in cli("CLUSTER", "NODES").splitlines():
        parts = line.split()
        if "master" not in parts[2]: continue
        for r in parts[8:]:
            a, _, b = r.partition("-"); b = b or a
            if int(a) <= slot <= int(b): return int(parts[1].split(":")[1].split("@")[0])
async def main():
    servers = {p: redis(p) for p in PORTS}; time.sleep(0.5)
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in PORTS], "--cluster-replicas", "0", "--cluster-yes"], capture_output=True)
    while "cluster_state:ok" not in cli("CLUSTER", "INFO"): time.sleep(0.2)
    time.sleep(1)
    rooms = {}
    i = 0
    while len(rooms) < 3:
        o = owner(f"room-{i}")
        if o not in rooms: rooms[o] = f"room-{i}"
        i += 1
    victim = 7101
    order = [rooms[p] for p in PORTS if p != victim] + [rooms[victim]]
    seeds = sum([["--redis", f"redis://127.0.0.1:{p}"] for p in PORTS], [])
    nodes = [subprocess.Popen([CHAT, "--listen", f"127.0.0.1:{n}", "--node-id", f"chat-{k}", *seeds, "--redis-cluster"],
        stderr=open(f"/tmp/cl/chat-{k}.log", "w")) for k, n in enumerate(NODES)]
    time.sleep(2)
    received = {}  # (node, room) -> [(seq, t)]
    async def member(node, room):
        async with websockets.connect(f"ws://127.0.0.1:{NODES[node]}/ws") as ws:
            await ws.send(json.dumps({"op": "join", "room": room, "name": f"m{node}"}))
            async for raw in ws:
                m = json.loads(raw)
                if m.get("op") == "message": received.setdefault((node, room), []).append((int(m["text"]), time.time()))
    tasks = [asyncio.create_task(member(n, r)) for n in (1, 2) for r in order]
    await asyncio.sleep(1.5)
    health = []
    async with websockets.connect(f"ws://127.0.0.1:{NODES[0]}/ws") as pub:
        for r in order: await pub.send(json.dumps({"op": "join", "room": r, "name": "pub"}))
        await asyncio.sleep(0.5)
        start = time.time(); seq = 0; killed = revived = None
        while time.time() - start < 20:
            for r in order: await pub.send(json.dumps({"op": "say", "room": r, "text": str(seq)}))
            seq += 1
            t = time.time() - start
            if killed is None and t > 3:
                if HANG: servers[victim].send_signal(signal.SIGSTOP)
                else: servers[victim].kill(); servers[victim].wait()
                killed = time.time()
            if killed and revived is None and t > 13:
                if HANG: servers[victim].send_signal(signal.SIGCONT)
                else: servers[victim] = redis_restart(victim)
                revived = time.time()
            if killed and not revived and int(t * 10) % 20 == 0:
                codes = []
                for n in NODES:
                    try: codes.append(urllib.request.urlopen(f"http://127.0.0.1:{n}/healthz", timeout=1).status)
                    except Exception as e: codes.append(getattr(e, "code", "down"))
                health.append(codes)
            await asyncio.sleep(0.02)
        await asyncio.sleep(2)
    print("fault:", "SIGSTOP" if HANG else "kill -9", "for 10 s")
    print("rooms (healthy, healthy, killed):", order, "victim", victim, "sent", seq)
    print("healthz during kill:", health)
    for (n, r), got in sorted(received.items()):
        seqs = [s for s, _ in got]; ts = [t for _, t in got]
        gap = max((b - a for a, b in zip(ts, ts[1:])), default=0)
        print(f"node {n} {r}: {len(seqs)} of {seq}, in order {seqs == sorted(seqs)}, dupes {len(seqs) - len(set(seqs))}, longest gap {gap:.2f}s")
    for t in tasks: t.cancel()
    for p in nodes: p.send_signal(signal.SIGKILL)
    for s in servers.values(): s.send_signal(signal.SIGCONT); s.kill()
def redis_restart(port):
    return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", f"/tmp/cl/r{port}"], stdout=subprocess.DEVNULL)
asyncio.run(main())
