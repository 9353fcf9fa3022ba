"""Structured concurrency in views: tasks per connection, and tasks for the whole app."""

from __future__ import annotations

import trio

from trio_bocaws import App, WebSocket, WebSocketDisconnect

app = App()


# [clock]
@app.websocket_route("/clock", value_type="json")
async def clock(ws: WebSocket, interval: float = 1.0) -> None:
    paused = False

    async def send_ticks() -> None:
        count = 0
        while True:
            await trio.sleep(interval)
            if not paused:
                count += 1
                await ws.send({"tick": count})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_ticks)
        async for command in ws:  # {"pause": true} or {"pause": false}
            paused = bool(command.get("pause"))
            await ws.send({"paused": paused})
        # The client left (1000 or 1001): stop the writer too.
        nursery.cancel_scope.cancel()
    # [end clock]


# [heartbeat]
async def heartbeat(ws: WebSocket, every: float) -> None:
    while True:
        await trio.sleep(every)
        await ws.send_text("heartbeat")


@app.websocket_route("/echo")
async def echo(ws: WebSocket, heartbeat_every: float = 15.0) -> None:
    ws.nursery.start_soon(heartbeat, ws, heartbeat_every)
    async for message in ws:
        await ws.send(message)
    # Returning ends the connection, and cancels the heartbeat with it.
    # [end heartbeat]


# [announcer]
ANNOUNCE_EVERY = 60.0
listeners: set[WebSocket] = set()


async def announce_the_time() -> None:
    while True:
        await trio.sleep(ANNOUNCE_EVERY)
        for ws in list(listeners):
            try:
                await ws.send_text(f"server time: {trio.current_time():.0f}")
            except WebSocketDisconnect:
                listeners.discard(ws)  # its own view cleans up too


@app.on_startup
def start_the_announcer() -> None:
    app.nursery.start_soon(announce_the_time)


@app.websocket_route("/announcements")
async def announcements(ws: WebSocket) -> None:
    await ws.accept()
    listeners.add(ws)
    try:
        async for _ in ws:
            pass  # this client only listens
    finally:
        listeners.discard(ws)
    # [end announcer]
