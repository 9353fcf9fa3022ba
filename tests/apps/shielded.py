"""A view whose cleanup shields itself from cancellation for 30 s (tests/test_terminal.py)."""

from __future__ import annotations

import trio

from trio_bocaws import App, WebSocket

app = App()


@app.websocket_route("/stubborn")
async def stubborn(ws: WebSocket) -> None:
    await ws.send("hello")
    try:
        async for _ in ws:
            pass
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(30)


@app.websocket_route("/rooms/{room}")
async def room(ws: WebSocket, room: str) -> None:
    await ws.send(room)
