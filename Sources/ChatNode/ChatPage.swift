/// The chat web page, served at `/`. Self-contained (no CDN, no web fonts), so it works offline; kept in the
/// binary so a node is a single file to deploy.
enum ChatPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Portico chat</title>
        <style>
        :root {
          --bg: #f6f7fb; --panel: #ffffff; --ink: #1d2330; --muted: #6b7385; --line: #e3e6ee;
          --accent: #4f5bd5; --accent-ink: #ffffff; --mine: #eef0ff; --ok: #1a7f37; --warn: #b35900;
          --radius: 12px; --shadow: 0 1px 2px rgba(16,24,40,.06), 0 4px 16px rgba(16,24,40,.06);
        }
        @media (prefers-color-scheme: dark) {
          :root { --bg: #12151c; --panel: #1a1f29; --ink: #e8ebf2; --muted: #98a1b3; --line: #2a3140;
                  --accent: #7c86ff; --mine: #242b45; }
        }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
               background: var(--bg); color: var(--ink); height: 100vh; display: flex; flex-direction: column; }
        header { display: flex; align-items: center; gap: 12px; padding: 12px 20px; background: var(--panel);
                 border-bottom: 1px solid var(--line); }
        header h1 { font-size: 17px; margin: 0; letter-spacing: .2px; }
        header h1 span { color: var(--accent); }
        .status { margin-left: auto; display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 13px; }
        .dot { width: 9px; height: 9px; border-radius: 50%; background: var(--warn); }
        .dot.up { background: var(--ok); }
        main { flex: 1; display: grid; grid-template-columns: 240px 1fr; min-height: 0; }
        aside { background: var(--panel); border-right: 1px solid var(--line); padding: 16px; display: flex;
                flex-direction: column; gap: 14px; overflow: auto; }
        label { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); }
        input { width: 100%; padding: 9px 11px; border: 1px solid var(--line); border-radius: 9px;
                background: var(--bg); color: var(--ink); font: inherit; }
        input:focus { outline: 2px solid var(--accent); outline-offset: -1px; }
        button { padding: 9px 14px; border: 0; border-radius: 9px; background: var(--accent); color: var(--accent-ink);
                 font: inherit; font-weight: 600; cursor: pointer; }
        button:disabled { opacity: .5; cursor: default; }
        .rooms { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 4px; }
        .rooms li { display: flex; align-items: center; gap: 8px; padding: 8px 10px; border-radius: 9px; cursor: pointer; }
        .rooms li.active { background: var(--mine); }
        .rooms li .count { margin-left: auto; font-size: 12px; color: var(--muted); }
        .rooms li .x { color: var(--muted); cursor: pointer; padding: 0 2px; }
        .row { display: flex; gap: 8px; }
        section { display: flex; flex-direction: column; min-height: 0; }
        #log { flex: 1; overflow-y: auto; padding: 20px; display: flex; flex-direction: column; gap: 10px; }
        .msg { max-width: 72%; background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius);
               padding: 8px 12px; box-shadow: var(--shadow); }
        .msg.mine { align-self: flex-end; background: var(--mine); }
        .msg .meta { font-size: 12px; color: var(--muted); display: flex; gap: 8px; margin-bottom: 2px; }
        .msg .meta b { color: var(--ink); }
        .msg .node { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 11px;
                     padding: 0 6px; border-radius: 6px; border: 1px solid var(--line); }
        .note { align-self: center; font-size: 12px; color: var(--muted); }
        form.compose { display: flex; gap: 10px; padding: 14px 20px; background: var(--panel); border-top: 1px solid var(--line); }
        .empty { margin: auto; color: var(--muted); text-align: center; }
        @media (max-width: 700px) { main { grid-template-columns: 1fr; } aside { border-right: 0; border-bottom: 1px solid var(--line); } }
        </style>
        </head>
        <body>
        <header>
          <h1><span>◆</span> Portico chat</h1>
          <div class="status"><div id="dot" class="dot"></div><span id="status">connecting…</span></div>
        </header>
        <main>
          <aside>
            <div><label for="name">Your name</label><input id="name" maxlength="32" autocomplete="off"></div>
            <div>
              <label for="room">Join a room</label>
              <form id="joinForm" class="row"><input id="room" maxlength="64" placeholder="lobby" autocomplete="off">
              <button type="submit">Join</button></form>
            </div>
            <div><label>Rooms</label><ul id="rooms" class="rooms"></ul></div>
          </aside>
          <section>
            <div id="log"><div class="empty" id="empty">Join a room to start. Open this page in another tab:<br>
            tabs land on different nodes, and messages still reach everyone.</div></div>
            <form id="compose" class="compose">
              <input id="text" placeholder="Message" autocomplete="off" maxlength="4000" disabled>
              <button id="send" type="submit" disabled>Send</button>
            </form>
          </section>
        </main>
        <script>
        "use strict";
        const $ = (id) => document.getElementById(id);
        const client = sessionStorage.client || (sessionStorage.client = Math.random().toString(36).slice(2, 10));
        const state = { socket: null, node: null, rooms: new Map(), current: null, backoff: 250, sent: 0, log: new Map() };
        $("name").value = localStorage.name || ("guest-" + client.slice(0, 4));
        $("name").addEventListener("change", () => { localStorage.name = $("name").value.trim() || "guest"; });

        function connect() {
          const scheme = location.protocol === "https:" ? "wss" : "ws";
          const socket = new WebSocket(`${scheme}://${location.host}/ws?client=${client}`);
          state.socket = socket;
          setStatus(false, "connecting…");
          socket.onopen = () => { state.backoff = 250; for (const room of state.rooms.keys()) send({ op: "join", room, name: name() }); };
          socket.onmessage = (event) => handle(JSON.parse(event.data));
          socket.onclose = (event) => {
            setStatus(false, `disconnected (${event.code}) · reconnecting`);
            const delay = state.backoff + Math.random() * state.backoff;
            state.backoff = Math.min(state.backoff * 2, 8000);
            setTimeout(connect, delay);
          };
        }
        function send(object) { if (state.socket && state.socket.readyState === 1) state.socket.send(JSON.stringify(object)); }
        function name() { return ($("name").value.trim() || "guest").slice(0, 32); }
        function setStatus(up, text) { $("dot").className = up ? "dot up" : "dot"; $("status").textContent = text; }

        function handle(message) {
          switch (message.op) {
          case "welcome":
            state.node = message.node;
            setStatus(true, `connected to ${message.node}`);
            note(`connected to node ${message.node}`);
            break;
          case "joined":
            state.rooms.set(message.room, message.members);
            select(message.room);
            break;
          case "presence":
            if (state.rooms.has(message.room)) { state.rooms.set(message.room, message.members); renderRooms(); }
            break;
          case "message":
            if (!state.log.has(message.room)) state.log.set(message.room, []);
            state.log.get(message.room).push(message);
            if (message.room === state.current) append(message);
            break;
          case "error":
            note(`error: ${message.reason}`);
            break;
          }
        }
        function select(room) {
          state.current = room;
          $("text").disabled = $("send").disabled = false;
          $("log").replaceChildren();
          note(`#${room}`);
          for (const message of state.log.get(room) || []) append(message);
          renderRooms();
          $("text").focus();
        }
        function renderRooms() {
          const list = $("rooms");
          list.replaceChildren();
          for (const [room, members] of state.rooms) {
            const item = document.createElement("li");
            if (room === state.current) item.className = "active";
            const title = document.createElement("span"); title.textContent = "#" + room;
            const count = document.createElement("span"); count.className = "count"; count.textContent = `${members} online`;
            const leave = document.createElement("span"); leave.className = "x"; leave.textContent = "×"; leave.title = "Leave";
            leave.onclick = (event) => { event.stopPropagation(); send({ op: "leave", room }); state.rooms.delete(room);
              if (state.current === room) { state.current = null; $("log").replaceChildren(); $("text").disabled = $("send").disabled = true; }
              renderRooms(); };
            item.append(title, count, leave);
            item.onclick = () => select(room);
            list.append(item);
          }
        }
        function append(message) {
          const box = document.createElement("div");
          const mine = message.from === name();
          box.className = mine ? "msg mine" : "msg";
          const meta = document.createElement("div"); meta.className = "meta";
          const who = document.createElement("b"); who.textContent = message.from;
          const via = document.createElement("span"); via.className = "node"; via.textContent = "via " + message.node;
          via.title = "the node this message came through";
          meta.append(who, via);
          const text = document.createElement("div"); text.textContent = message.text;
          box.append(meta, text);
          $("log").append(box);
          $("log").scrollTop = $("log").scrollHeight;
        }
        function note(text) {
          const line = document.createElement("div"); line.className = "note"; line.textContent = text;
          $("log").append(line);
        }
        $("joinForm").onsubmit = (event) => {
          event.preventDefault();
          const room = $("room").value.trim() || "lobby";
          $("room").value = "";
          if (!state.rooms.has(room)) state.rooms.set(room, 0);
          send({ op: "join", room, name: name() });
          select(room);
        };
        $("compose").onsubmit = (event) => {
          event.preventDefault();
          const text = $("text").value.trim();
          if (!text || !state.current) return;
          send({ op: "say", room: state.current, text, id: `${client}-${++state.sent}` });
          $("text").value = "";
        };
        connect();
        </script>
        </body>
        </html>
        """#
}
