"""What a view can learn about the connection request."""

from __future__ import annotations

from trio_bocaws import App, WebSocket

app = App()


# [whoami]
@app.websocket_route("/whoami", auto_accept=False)
async def whoami(ws: WebSocket) -> None:
    # Speak the newer protocol when the client offers it.
    chosen = "chat.v2" if "chat.v2" in ws.subprotocols else None
    await ws.accept(subprotocol=chosen)
    await ws.send_json(
        {
            "url": ws.url,
            "scheme": ws.url.scheme,
            "path": ws.url.path,
            "tags": ws.query_params.getall("tag", []),
            "user_agent": ws.headers.get("User-Agent"),
            "client": ws.client.host if ws.client else None,
            "offered": list(ws.subprotocols),
            "subprotocol": ws.subprotocol,
        }
    )
    # [end whoami]
