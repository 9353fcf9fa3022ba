"""proxied.py: behind a reverse proxy, take the client's address from X-Forwarded-For."""

from hypercorn.middleware import ProxyFixMiddleware

from trio_bocaws import App, WebSocket

app = App()


@app.websocket_route("/whoami")
async def whoami(ws: WebSocket) -> None:
    client = ws.client.host if ws.client else "unknown"
    await ws.send(f"{client} via {ws.url.scheme}")


# Trust one proxy: the last address in X-Forwarded-For is the client's.
proxied_app = ProxyFixMiddleware(app, mode="legacy", trusted_hops=1)
