"""serve_tls.py: serve wss:// (and https:// for the page) with a certificate and its key."""

from trio_bocaws import App, ServerConfig, WebSocket, run

app = App()


@app.websocket_route("/hello")
async def hello(ws: WebSocket) -> None:
    await ws.send_text(f"hello over {ws.url.scheme}")


CONFIG = ServerConfig(
    bind=("0.0.0.0:8443",),
    # PEM files: the certificate followed by its chain, and the private key.
    certfile="/etc/ssl/chat/fullchain.pem",
    keyfile="/etc/ssl/chat/privkey.pem",
)

if __name__ == "__main__":
    run(app, CONFIG)
