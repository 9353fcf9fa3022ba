"""chat.py: rooms shared by every worker through Redis, and what a Redis outage does."""

import os

from trio_bocaws import App, Broadcast, BroadcastError, WebSocket

# redis://host:port/db in production; memory:// (one process) when it is not set.
hub = Broadcast(os.environ.get("BROADCAST_URL", "memory://"))
app = App(broadcast=hub)


@app.websocket_route("/chat/{name}", value_type="json")
async def chat(ws: WebSocket, name: str, user: str = "anonymous") -> None:
    room = hub.room(name)
    await room.join(ws)
    async for text in ws:
        try:
            await room.send({"user": user, "text": text})
        except BroadcastError:
            # Redis is unreachable, or did not answer within publish_timeout: the message
            # is not confirmed, and nothing is queued for later.
            await ws.send({"error": "not delivered; try again in a moment", "text": text})
