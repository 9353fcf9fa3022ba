"""echo.py: every message comes back, with a prefix."""

from trio_bocaws import App, WebSocket

app = App()


@app.websocket_route("/echo")
async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(f"You said: {message}")
