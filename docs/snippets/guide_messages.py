"""Receiving and sending, with each value type."""

from __future__ import annotations

from trio_bocaws import App, WebSocket

app = App()


# [text]
@app.websocket_route("/shout")
async def shout(ws: WebSocket) -> None:
    async for message in ws:  # text by default
        await ws.send(message.upper())
    # [end text]


# [types]
@app.websocket_route("/double", value_type="bytes")
async def double(ws: WebSocket) -> None:
    async for data in ws:
        await ws.send(data * 2)


@app.websocket_route("/sum", value_type="json")
async def total(ws: WebSocket) -> None:
    async for numbers in ws:
        await ws.send({"sum": sum(numbers)})


@app.websocket_route("/describe", receive_type="json", send_type="text")
async def describe(ws: WebSocket) -> None:
    async for document in ws:
        await ws.send(f"a {type(document).__name__}")
    # [end types]


# [explicit]
@app.websocket_route("/upload")
async def upload(ws: WebSocket) -> None:
    # The typed methods work whatever the route's types are.
    name = await ws.receive_text()
    payload = await ws.receive_bytes()
    await ws.send_json({"name": name, "size": len(payload)})
    # [end explicit]


# [events]
@app.websocket_route("/raw")
async def raw(ws: WebSocket) -> None:
    event = await ws.receive_event()  # {"type": "websocket.receive", "text": ...}
    await ws.send_event({"type": "websocket.send", "text": f"You said: {event['text']}"})
    # [end events]
