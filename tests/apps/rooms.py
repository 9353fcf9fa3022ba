"""A room app for tests: history with resume, and presence, through the hub named by
``ROOMS_BROADCAST_URL`` (``make_app`` builds one for any URL, in process).

``/rooms/{name}?user=U&since=ID``: joins the room as ``U`` (resuming after ``ID`` when
given) with id envelopes, answers ``{"joined": name}`` once it is a member (or
``{"gap": oldest}`` and closes, when it cannot resume), then sends each text it receives
to the room and answers ``{"sent": id}``.
"""

from __future__ import annotations

import os

from trio_bocaws import App, Broadcast, BroadcastConfig, HistoryGap, RoomConfig, WebSocket


def make_app(url: str, presence_ttl: float = 30.0, history_size: int = 100) -> App:
    config = BroadcastConfig(
        rooms=RoomConfig(history_size=history_size, presence=True), presence_ttl=presence_ttl
    )
    hub = Broadcast(url, config=config)
    app = App(broadcast=hub)

    @app.websocket_route("/rooms/{name}", value_type="text")
    async def member(ws: WebSocket, name: str, user: str, since: str | None = None) -> None:
        room = hub.room(name)
        try:
            await room.join(ws, since=since, key=user, envelope=True)
        except HistoryGap as gap:
            await ws.send_json({"gap": gap.oldest})
            await ws.close()
            return
        await ws.send_json({"joined": name})
        async for text in ws:
            await ws.send_json({"sent": await room.send_text(text)})

    return app


app = make_app(
    os.environ.get("ROOMS_BROADCAST_URL", "memory://"),
    float(os.environ.get("ROOMS_PRESENCE_TTL", "30")),
)
