"""Chat rooms: every message goes to everyone in the room, the page is served alongside.

    python -m trio_bocaws examples.chat.app:app              # then open http://127.0.0.1:8000
    hypercorn --worker-class trio examples.chat.app:app

Messages are JSON: the browser sends ``{"text": ...}``, everyone in the room receives
``{"user": ..., "text": ...}``, and ``{"user": ..., "joined": true}`` or ``"left"`` when
people come and go.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import trio

from trio_bocaws import App, HTMLPage, WebSocket, WebSocketDisconnect, run

PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

app = App(HTMLPage(PAGE))
rooms: defaultdict[str, set[WebSocket]] = defaultdict(set)


async def broadcast(room: str, message: dict[str, Any]) -> None:
    for member in list(rooms[room]):
        try:
            await member.send(message)
        except WebSocketDisconnect:
            rooms[room].discard(member)  # it left; its own view cleans up too


# {room:path}: a room name may hold a "/", which the page sends percent-encoded.
@app.websocket_route("/chat/{room:path}", value_type="json")
async def chat(ws: WebSocket, room: str, user: str = "anonymous") -> None:
    await ws.accept()
    rooms[room].add(ws)
    await broadcast(room, {"user": user, "joined": True})
    try:
        async for message in ws:
            text = message.get("text") if isinstance(message, dict) else None
            if not isinstance(text, str) or not text:
                await ws.send({"error": 'send {"text": "..."}'})
                continue
            await broadcast(room, {"user": user, "text": text})
    finally:
        rooms[room].discard(ws)
        if not rooms[room]:
            del rooms[room]
        else:
            # Also when cancelled (server shutdown): shielded, and bounded.
            with trio.move_on_after(2, shield=True):
                await broadcast(room, {"user": user, "left": True})


if __name__ == "__main__":
    print("Chat: open http://127.0.0.1:8000 (Ctrl+C to stop)")
    run(app)
