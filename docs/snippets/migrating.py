"""A Bocadillo WebSocket app on trio_bocaws."""

import trio

from trio_bocaws import App
from trio_bocaws.websockets import WebSocket, WebSocketDisconnect

app = App()
clients: set[WebSocket] = set()


@app.websocket_route("/echo", value_type="json")
async def echo(ws: WebSocket, anonymous: bool = False) -> None:
    user = "anonymous" if anonymous else ws.headers.get("user", "unknown")
    async for message in ws:
        await ws.send({"user": user, "message": message})


@app.websocket_route("/hello", auto_accept=False)
async def hello(ws: WebSocket) -> None:
    if ws.headers.get("api-key") != "s3kr3t":
        await ws.reject()
        return  # Bocadillo's example went on here; a rejected socket cannot be used
    async with ws:
        await ws.send("hello")


@app.websocket_route("/news")
async def news(ws: WebSocket) -> None:
    clients.add(ws)
    try:
        while True:
            await ws.send("still here")
            await trio.sleep(1)  # was: await asyncio.sleep(1)
    except WebSocketDisconnect:
        pass  # with trio_bocaws, a send to a client that left raises this
    finally:
        clients.discard(ws)


@app.on("shutdown")
def goodbye() -> None:
    print(f"{len(clients)} clients still connected")
