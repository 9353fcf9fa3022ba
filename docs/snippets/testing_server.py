"""test_server.py: a real hypercorn server inside a test, without the plugin."""

import trio

from trio_bocaws import App, WebSocket
from trio_bocaws.testing import open_websocket, serving

app = App()


@app.websocket_route("/wait")
async def wait(ws: WebSocket) -> None:
    await ws.receive_text()


async def test_shutdown_is_a_close_frame() -> None:
    with trio.fail_after(10):
        async with (
            serving(app, graceful_timeout=30) as server,
            open_websocket(server.url + "/wait") as ws,
        ):
            await server.shutdown()  # as on SIGTERM
            assert ws.closed is not None
            assert (ws.closed.code, ws.closed.reason) == (1001, "server shutting down")
