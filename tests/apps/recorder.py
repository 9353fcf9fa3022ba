"""A bare ASGI app for subprocess tests: it remembers how the last client left.

``/echo`` echoes text; ``/last`` sends ``"<code> <reason>"`` of the last ``/echo`` client that
disconnected, so a test can read what the app saw from outside the process.
"""

from __future__ import annotations

from typing import Any

import trio

from trio_bocaws import WebSocket, WebSocketDisconnect

last_disconnect = trio.Event()
last: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    ws = WebSocket(scope, receive, send, caught_close_codes=())
    async with ws:
        if scope["path"] == "/last":
            with trio.fail_after(5):
                await last_disconnect.wait()
            await ws.send_text(last[-1])
            return
        try:
            async for message in ws:
                await ws.send_text(message)
        except WebSocketDisconnect as exc:
            last.append(f"{exc.code} {exc.reason}")
            last_disconnect.set()
            raise
