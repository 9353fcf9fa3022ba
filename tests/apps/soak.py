"""The echo example, plus ``/collect``: a full garbage collection in the server process.

The runner defers full collections (``gc_full_threshold``), so garbage cycles from closed
connections may wait a while in the oldest generation; the soak test collects before it
reads the server's memory and counts its objects, so that what it measures is what cannot
be freed: leaks.
"""

from __future__ import annotations

import gc

from examples.echo import app
from trio_bocaws import WebSocket


@app.websocket_route("/collect")
async def collect(ws: WebSocket) -> None:
    """Collect, then say how many objects the collector tracks: a count that a leak of even
    one object per connection moves, where the resident size blurs it."""
    gc.collect()
    await ws.send_text(str(len(gc.get_objects())))


__all__ = ["app"]
