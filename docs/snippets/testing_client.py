"""test_app.py: tests with the in-process TestClient."""

import pytest

from trio_bocaws import App, WebSocket
from trio_bocaws.testing import ConnectionClosed, HandshakeRejected, TestClient

app = App()


@app.websocket_route("/echo")
async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


@app.websocket_route("/vip")
async def vip(ws: WebSocket, token: str = "") -> None:
    if token != "gold":
        await ws.reject(403, body="members only")
        return
    await ws.send_text("welcome")
    await ws.close(4000, "that was all")


async def test_echo() -> None:
    # `async with TestClient(app)` also runs the app's startup and shutdown.
    async with TestClient(app) as client, client.websocket_connect("/echo") as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "hi"


async def test_a_refused_handshake() -> None:
    with pytest.raises(HandshakeRejected) as refused:
        async with TestClient(app).websocket_connect("/vip?token=silver"):
            pass
    assert (refused.value.status, refused.value.body) == (403, b"members only")


async def test_the_close_code_the_client_sees() -> None:
    async with TestClient(app).websocket_connect("/vip?token=gold") as ws:
        assert await ws.receive_text() == "welcome"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (4000, "that was all")


async def test_shutdown_closes_open_connections() -> None:
    async with TestClient(app) as client, client.websocket_connect("/echo") as ws:
        client.begin_shutdown()  # what SIGTERM does to a server
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (1001, "server shutting down")
