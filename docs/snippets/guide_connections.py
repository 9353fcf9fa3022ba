"""Accepting, rejecting and closing connections."""

from __future__ import annotations

from typing import Any

from trio_bocaws import App, RejectConnection, WebSocket

app = App()
API_KEYS = {"s3kr3t"}
ROOMS = {"lobby", "den"}


# [private]
@app.websocket_route("/private")
async def private(ws: WebSocket) -> None:
    # Nothing has been sent yet, so the handshake can still be refused.
    if ws.headers.get("api-key") not in API_KEYS:
        await ws.reject(401, body="send a valid api-key header")
        return
    async for message in ws:  # the first receive accepts the connection
        await ws.send(f"authorized: {message}")
    # [end private]


# [countdown]
@app.websocket_route("/countdown", auto_accept=False)
async def countdown(ws: WebSocket, start: int = 3) -> None:
    if start > 10:
        await ws.reject(400, body="start at 10 at most")
        return
    await ws.accept()
    for number in range(start, 0, -1):
        await ws.send(str(number))
    await ws.close(1000, "liftoff")
    # [end countdown]


# [raise]
@app.websocket_route("/rooms/{room}")
async def room(ws: WebSocket, room: str) -> None:
    if room not in ROOMS:
        raise RejectConnection(404, f"there is no room called {room!r}")
    await ws.send(f"welcome to {room}")
    # [end raise]


# [plain]
async def plain_asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """No App: a bare ASGI application that uses the WebSocket class directly."""
    if scope["type"] != "websocket":
        return
    async with WebSocket(scope, receive, send, value_type="json") as ws:
        async for message in ws:
            await ws.send({"echo": message})
    # [end plain]
