"""What a view does when the server shuts down."""

from __future__ import annotations

from functools import partial

import trio

from trio_bocaws import App, ServerConfig, WebSocket, serve

app = App()
online: set[str] = set()
last_seen: dict[str, float] = {}


async def save_last_seen(user: str) -> None:
    await trio.sleep(0.01)  # a database write, say
    last_seen[user] = trio.current_time()


# [presence]
@app.websocket_route("/presence/{user}")
async def presence(ws: WebSocket, user: str) -> None:
    online.add(user)
    try:
        async for message in ws:
            await ws.send(f"{user}: {message}")
    finally:
        # Runs when the client leaves, and when the server shuts down (the view is then
        # cancelled, so anything awaited here needs a shield, and a time limit).
        online.discard(user)
        with trio.move_on_after(2, shield=True):
            await save_last_seen(user)


@app.on_shutdown
def report() -> None:
    # Runs after every connection has ended.
    print(f"shut down; {len(last_seen)} users seen")
    # [end presence]


# [embedded]
async def main(
    stop: trio.Event,
    config: ServerConfig,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `stop` is set; then close every WebSocket with 1001 and return."""
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        print("serving on", *urls)
        task_status.started(urls)
    # [end embedded]
