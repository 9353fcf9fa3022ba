"""Routes, views and their parameters."""

from __future__ import annotations

import uuid

from trio_bocaws import App, AppConfig, WebSocket, WebSocketConfig

# [app]
# Every route of this app speaks JSON unless it says otherwise.
app = App(config=AppConfig(websocket=WebSocketConfig(receive_type="json", send_type="json")))
# [end app]


# [feed]
@app.websocket_route("/feeds/{name}")
async def feed(ws: WebSocket, name: str, since: int = 0, verbose: bool = False) -> None:
    await ws.send({"feed": name, "since": since, "verbose": verbose})
    # [end feed]


# [converters]
@app.websocket_route("/items/{item_id:int}")
async def item(ws: WebSocket, item_id: int) -> None:
    await ws.send({"item": item_id})


@app.websocket_route("/files/{location:path}")
async def file(ws: WebSocket, location: str) -> None:
    await ws.send({"location": location})


@app.websocket_route("/sessions/{key:uuid}")
async def session(ws: WebSocket, key: uuid.UUID) -> None:
    await ws.send({"key": str(key), "version": key.version})


@app.websocket_route("/players/{player}")
async def player(ws: WebSocket, player: int) -> None:
    # `{player}` matches any segment; the annotation converts it.
    await ws.send({"player": player})
    # [end converters]


# [query]
@app.websocket_route("/search")
async def search(ws: WebSocket, q: str, limit: int | None = None) -> None:
    # `q` has no default: a handshake without ?q= is refused.
    await ws.send({"q": q, "limit": limit})
    # [end query]


# [add]
async def status(ws: WebSocket) -> None:
    await ws.send("ok")


app.add_websocket_route("/status", status, value_type="text")
# [end add]
