#!/usr/bin/env python3
"""A python-socketio chat node: the anchor the relay is measured against (scripts/bench_anchor.sh).

The same chat as portico-chat, in Socket.IO's idiom: AsyncServer on aiohttp with AsyncRedisManager (Redis
pub/sub between nodes), events `join` (the room; answered with `joined` and this node's name) and `say`
({room, text, id}; emitted to the room as `message` on every node, the sender included).

Usage: socketio_node.py PORT REDIS_URL NODE
"""
import sys

import socketio
from aiohttp import web

port, redis_url, node = int(sys.argv[1]), sys.argv[2], sys.argv[3]
manager = socketio.AsyncRedisManager(redis_url)
server = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, logger=False, engineio_logger=False)
app = web.Application()
server.attach(app)


@server.on("join")
async def join(sid, room):
    await server.enter_room(sid, room)
    await server.emit("joined", {"op": "joined", "room": room, "node": node}, to=sid)


@server.on("say")
async def say(sid, data):
    message = {"op": "message", "room": data["room"], "text": data["text"], "id": data["id"], "node": node}
    await server.emit("message", message, room=data["room"])


web.run_app(app, host="127.0.0.1", port=port, print=None)
