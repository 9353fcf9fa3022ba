"""serve.py: run the app with settings kept in code (`python serve.py`)."""

from trio_bocaws import App, ServerConfig, WebSocket, run

app = App()


@app.websocket_route("/echo")
async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


CONFIG = ServerConfig(
    bind=("0.0.0.0:8000",),
    graceful_timeout=10,
    # Ping every 20 s; drop a client that sent nothing (pongs count) for 45 s.
    ping_interval=20,
    read_timeout=45,
)

if __name__ == "__main__":
    run(app, CONFIG)
