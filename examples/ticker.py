"""A ticker: one background task pushes to every connected client.

    python -m trio_bocaws examples.ticker:app

The task starts with the app (``on_startup``) in the app-wide nursery and publishes a
tick every second to a room; each connection joins the room. A client that stops reading
only loses old ticks (the room drops its oldest waiting message), it never slows the
others.
"""

from __future__ import annotations

import os

import trio

from trio_bocaws import App, Broadcast, WebSocket

INTERVAL = float(os.environ.get("TICKER_INTERVAL", "1.0"))

hub = Broadcast()
app = App(broadcast=hub)
ticks = hub.room("ticks")


async def tick_forever() -> None:
    count = 0
    while True:
        await trio.sleep(INTERVAL)
        count += 1
        await ticks.send_json({"tick": count, "clients": ticks.members})


@app.on_startup
def start_ticking() -> None:
    app.nursery.start_soon(tick_forever)


@app.websocket_route("/ticks")
async def listen(ws: WebSocket) -> None:
    await ticks.join(ws)
    # The client has nothing to say; wait until it leaves (or the server stops).
    async for _ in ws:
        pass
