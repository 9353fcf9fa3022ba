"""rooms_history.py: a room that keeps its latest messages, lets a client resume after the
last one it saw, and knows who is in it."""

from trio_bocaws import App, Broadcast, BroadcastConfig, HistoryGap, RoomConfig, WebSocket

rooms = RoomConfig(history_size=100, history_age=3600, presence=True)
hub = Broadcast(config=BroadcastConfig(rooms=rooms))  # every room of this hub
app = App(broadcast=hub)


@app.websocket_route("/rooms/{name}", value_type="json")
async def member(ws: WebSocket, name: str, user: str, since: str | None = None) -> None:
    room = hub.room(name)
    # Each message comes as {"id": ..., "message": ...}: the client keeps the last id,
    # and gives it back as ?since= when it reconnects.
    try:
        if since is None:
            await room.join(ws, last=20, key=user, envelope=True)  # what was said lately
        else:
            await room.join(ws, since=since, key=user, envelope=True)  # what it missed
    except HistoryGap:
        # Too far behind (or from before a restart): say so, then start afresh.
        await ws.send({"resync": True})
        await room.join(ws, last=20, key=user, envelope=True)
    async for message in ws:
        await room.send({"user": user, "said": message})


@app.websocket_route("/who/{name}", value_type="json")
async def who(ws: WebSocket, name: str) -> None:
    room = hub.room(name)

    async def follow() -> None:
        async with room.watch_presence() as changes:  # watch, then read: nothing missed
            await ws.send({"here": await room.presence()})
            async for change in changes:
                await ws.send({"user": change.key, "connections": change.connections})

    ws.nursery.start_soon(follow)  # a task of the connection: it ends with it
    async for _ in ws:  # until the client leaves
        pass
