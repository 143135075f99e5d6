#!/usr/bin/env python3
"""A tiny WebSocket client for the chat protocol, standard library only (RFC 6455 by hand).
Usage: ws_client.py HOST PORT CLIENT_ID NAME [SAY]
Prints the node it lands on, joins "lobby", optionally says SAY, and prints every message it receives
for a few seconds as JSON lines."""
import base64, json, os, socket, struct, sys, time


def frame(text):
    payload = text.encode()
    key = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Reader:
    """Frames from the server (unmasked), read across timeouts."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def next(self):
        """The next (opcode, payload), or None when nothing arrived before the socket's timeout."""
        while True:
            if len(self.buffer) >= 2:
                length, offset = self.buffer[1] & 0x7F, 2
                if length == 126 and len(self.buffer) >= 4:
                    length, offset = struct.unpack(">H", self.buffer[2:4])[0], 4
                if length != 126 and len(self.buffer) >= offset + length:
                    opcode = self.buffer[0] & 0x0F
                    payload = self.buffer[offset:offset + length]
                    self.buffer = self.buffer[offset + length:]
                    return opcode, payload
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise EOFError
            self.buffer += chunk


def main():
    host, port, client, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    say = sys.argv[5] if len(sys.argv) > 5 else None
    sock = socket.create_connection((host, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws?client={client} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    if b" 101 " not in head.split(b"\r\n")[0]:
        print(json.dumps({"op": "handshake-failed", "status": head.split(b"\r\n")[0].decode()}))
        return 1
    sock.sendall(frame(json.dumps({"op": "join", "room": "lobby", "name": name})))
    deadline = time.time() + float(os.environ.get("WS_SECONDS", "4"))
    said = False
    sock.settimeout(0.2)
    reader = Reader(sock)
    while time.time() < deadline:
        try:
            received = reader.next()
        except EOFError:
            break
        if received is None:
            if say and not said and time.time() > deadline - 2.5:
                sock.sendall(frame(json.dumps({"op": "say", "room": "lobby", "text": say, "id": f"{client}-1"})))
                said = True
            continue
        opcode, payload = received
        if opcode == 1:
            print(payload.decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
