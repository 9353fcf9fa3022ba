"""An App for multi-process tests: ``/pid`` says which worker process took the connection."""

from __future__ import annotations

import os

from trio_bocaws import App, WebSocket

app = App()


@app.websocket_route("/pid")
async def pid(ws: WebSocket) -> None:
    await ws.send_text(str(os.getpid()))
    await ws.receive_text()  # hold the connection until the client or the server ends it
