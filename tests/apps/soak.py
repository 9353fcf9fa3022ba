"""The echo example, plus ``/collect``: a full garbage collection in the server process.

The runner defers full collections (``gc_full_threshold``), so garbage cycles from closed
connections may wait a while in the oldest generation; the soak test collects before it
reads the server's memory, so that what it measures is what cannot be freed: leaks.
"""

from __future__ import annotations

import gc

from examples.echo import app
from trio_bocaws import WebSocket


@app.websocket_route("/collect")
async def collect(ws: WebSocket) -> None:
    await ws.send_text(str(gc.collect()))


__all__ = ["app"]
