"""An App for multi-process tests: ``/pid`` says which worker process took the connection,
``/gc`` how its garbage collector is set."""

from __future__ import annotations

import gc
import os

from trio_bocaws import App, WebSocket

app = App()


@app.websocket_route("/pid")
async def pid(ws: WebSocket) -> None:
    await ws.send_text(str(os.getpid()))
    await ws.receive_text()  # hold the connection until the client or the server ends it


@app.websocket_route("/gc")
async def collector(ws: WebSocket) -> None:
    """The garbage collector's thresholds in the worker that took the connection."""
    await ws.send_json(list(gc.get_threshold()))
