"""serve.py: the limits of a chat server, each set to what this app needs."""

from trio_bocaws import App, AppConfig, ServerConfig, WebSocket, run

# [app]
# At most 1,000 open WebSockets in this worker process; more are refused with 503.
app = App(config=AppConfig(max_connections=1_000))


# A chat client that says nothing for 5 minutes is closed with 1001.
@app.websocket_route("/chat", idle_timeout=300)
async def chat(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


# No idle_timeout: a client that only listens to the feed is not idle to its user.
@app.websocket_route("/feed")
async def feed(ws: WebSocket) -> None:
    await ws.send("the feed starts here")
    async for _ in ws:
        pass
    # [end app]


# [server]
CONFIG = ServerConfig(
    bind=("0.0.0.0:8000",),
    # Chat messages are small: refuse anything over 64 KiB (close 1009).
    max_message_size=64 * 1024,
    # Find dead peers: ping every 20 s, drop a client silent for 45 s (pongs count).
    ping_interval=20,
    read_timeout=45,
    # Drop a client that leaves what we send unread for 30 s (the default; Linux).
    write_timeout=30,
)
# [end server]

if __name__ == "__main__":
    run(app, CONFIG)
