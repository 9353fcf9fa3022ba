"""Chat rooms: history for newcomers, who is here, and resume after a dropped connection.

    python -m trio_bocaws examples.chat.app:app              # then open http://127.0.0.1:8000
    hypercorn --worker-class trio examples.chat.app:app

Rooms go through a broadcast hub: in this process by default, or through Redis so that
several workers (or machines) share the rooms, their history and who is in them:

    CHAT_BROADCAST_URL=redis://127.0.0.1:6379/0 \\
        hypercorn --worker-class trio --workers 2 examples.chat.app:app

Messages are JSON. The browser sends ``{"text": ...}``. The server sends:

- ``{"id": ..., "message": {"user": ..., "text": ...}}``: something said in the room, with
  its id. A newcomer first gets the latest ones the room keeps.
- ``{"here": {"ada": 1, "bob": 2}}``: who is in the room (with their connections), first.
- ``{"user": ..., "joined": true}`` or ``{"user": ..., "left": true}``: someone's first
  connection came, or their last one went.
- ``{"resync": true}``: the messages after the page's last id are no longer all kept; the
  latest ones follow, to be shown instead of what the page has.
- ``{"error": ...}``: a message the server could not take.

A page that loses its connection connects again with ``?since=<the last id it got>``, and
is sent what it missed, each message once and in order, then the live ones.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import trio

from trio_bocaws import (
    App,
    Broadcast,
    BroadcastConfig,
    HistoryGap,
    HTMLPage,
    Room,
    RoomConfig,
    WebSocket,
    WebSocketDisconnect,
    WebSocketStateError,
    run,
)

PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")
RECENT = 20  # what a newcomer sees

# Every room keeps its latest 200 messages (in Redis, for every worker) and knows who is in it.
rooms = RoomConfig(history_size=200, presence=True)
hub = Broadcast(
    os.environ.get("CHAT_BROADCAST_URL", "memory://"), config=BroadcastConfig(rooms=rooms)
)
app = App(HTMLPage(PAGE), broadcast=hub)
MESSAGE_ID = re.compile(r"[0-9]+-[0-9]+")


def text_of(message: Any) -> str | None:
    text = message.get("text") if isinstance(message, dict) else None
    return text if isinstance(text, str) and text else None


async def who_is_here(
    ws: WebSocket, members: Room, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Send who is in the room, then each first arrival and each last departure."""
    async with members.watch_presence() as changes:  # watch, then read: none missed
        here = await members.presence()
        await ws.send({"here": here})
        task_status.started()  # a failure before this is the view's own
        with contextlib.suppress(WebSocketDisconnect, WebSocketStateError):  # nobody to tell
            async for change in changes:
                before = here.get(change.key, 0)
                here[change.key] = change.connections
                if before == 0 and change.connections > 0:
                    await ws.send({"user": change.key, "joined": True})
                elif before > 0 and change.connections == 0:
                    await ws.send({"user": change.key, "left": True})


async def enter(ws: WebSocket, members: Room, user: str, since: str) -> None:
    """Join the room: after ``since`` if the page has it, else with the latest messages."""
    if since and MESSAGE_ID.fullmatch(since):
        try:
            await members.join(ws, since=since, key=user, envelope=True)  # what it missed
            return
        except HistoryGap:
            pass  # too far behind, or from before Redis lost the history
    if since:
        await ws.send({"resync": True})  # the page starts afresh
    await members.join(ws, last=RECENT, key=user, envelope=True)  # what was said lately


# {room:path}: a room name may hold a "/", which the page sends percent-encoded.
@app.websocket_route("/chat/{room:path}", value_type="json")
async def chat(ws: WebSocket, room: str, user: str = "anonymous", since: str = "") -> None:
    members = hub.room(room)
    await ws.nursery.start(who_is_here, ws, members)
    await enter(ws, members, user, since)
    async for message in ws:
        text = text_of(message)
        if text is None:
            await ws.send({"error": 'send {"text": "..."}'})
            continue
        await members.send({"user": user, "text": text})  # JSON-encoded once for all


if __name__ == "__main__":
    print("Chat: open http://127.0.0.1:8000 (Ctrl+C to stop)")
    run(app)
