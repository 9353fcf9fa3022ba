"""Chat rooms: every message goes to everyone in the room, the page is served alongside.

    python -m trio_bocaws examples.chat.app:app              # then open http://127.0.0.1:8000
    hypercorn --worker-class trio examples.chat.app:app

Rooms go through a broadcast hub: in this process by default, or through Redis so that
several workers (or machines) share the rooms:

    CHAT_BROADCAST_URL=redis://127.0.0.1:6379/0 \\
        hypercorn --worker-class trio --workers 2 examples.chat.app:app

Messages are JSON: the browser sends ``{"text": ...}``, everyone in the room receives
``{"user": ..., "text": ...}``, and ``{"user": ..., "joined": true}`` or ``"left"`` when
people come and go.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import trio

from trio_bocaws import App, Broadcast, BroadcastError, HTMLPage, WebSocket, run

PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

hub = Broadcast(os.environ.get("CHAT_BROADCAST_URL", "memory://"))
app = App(HTMLPage(PAGE), broadcast=hub)


def text_of(message: Any) -> str | None:
    text = message.get("text") if isinstance(message, dict) else None
    return text if isinstance(text, str) and text else None


# {room:path}: a room name may hold a "/", which the page sends percent-encoded.
@app.websocket_route("/chat/{room:path}", value_type="json")
async def chat(ws: WebSocket, room: str, user: str = "anonymous") -> None:
    members = hub.room(room)
    await members.join(ws)  # a member until the connection ends
    await members.send({"user": user, "joined": True})
    try:
        async for message in ws:
            text = text_of(message)
            if text is None:
                await ws.send({"error": 'send {"text": "..."}'})
                continue
            await members.send({"user": user, "text": text})  # JSON-encoded once for all
    finally:
        members.leave(ws)
        # Also when cancelled (server shutdown): shielded, and bounded.
        # If Redis is down, the others do not hear of it.
        with trio.move_on_after(2, shield=True), contextlib.suppress(BroadcastError):
            await members.send({"user": user, "left": True})


if __name__ == "__main__":
    print("Chat: open http://127.0.0.1:8000 (Ctrl+C to stop)")
    run(app)
