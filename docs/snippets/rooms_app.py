"""rooms.py: rooms of WebSockets, through the app's broadcast hub."""

from trio_bocaws import App, Broadcast, WebSocket

hub = Broadcast()  # memory://: the rooms of this process
app = App(broadcast=hub)


@app.websocket_route("/rooms/{name}", value_type="json")
async def member(ws: WebSocket, name: str, user: str = "anonymous") -> None:
    room = hub.room(name)
    await room.join(ws)  # a member until the connection ends, or until leave()
    await ws.send({"room": name, "members": room.members})
    async for message in ws:
        if message == "leave":
            room.leave(ws)  # no more room messages; the connection stays open
            await ws.send({"left": name})
        else:
            # Encoded as JSON once, then sent to every member, the sender included.
            await room.send({"user": user, "said": message})
