"""Issue 12 on a real server: every call tells the truth about the connection, a cancelled
close still closes, the client's bad data is the client's fault, Bocadillo's accept-first.

Each test runs hypercorn's trio worker (with trio_bocaws's adapter) and a trio-websocket
client, and asserts what the client saw; none waits on the clock."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import trio
from trio_websocket import ConnectionClosed

from trio_bocaws import App, WebSocket, WebSocketDisconnect, WebSocketState

from .conftest import Server, close_of, connect, websocket_app

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 5
# Why some tests need the adapter: without its stream status, a WebSocket learns of the
# client's close only from the websocket.disconnect event, when it next reads.
STATUS = "the state and the first send know of the client's close before the app reads"


class SendAfterClose:
    """A view that waits until the test says the client's close handshake is over, then
    reads the state and sends once."""

    def __init__(self) -> None:
        self.client_closed = trio.Event()
        self.seen: list[object] = []
        self.done = trio.Event()

    async def after_close(self, ws: WebSocket) -> None:
        await self.client_closed.wait()
        self.seen += [ws.state, ws.close_code]
        try:
            await ws.send_text("into the void")
        except WebSocketDisconnect as exc:
            self.seen.append((exc.code, exc.reason))
        else:
            self.seen.append("sent")


async def _close_then_signal(url: str, view: SendAfterClose) -> None:
    async with connect(url) as client:
        assert await client.get_message() == "hello"
        await client.aclose(4001, "bye")  # returns once the server answered the close
    view.client_closed.set()
    await view.done.wait()


@pytest.mark.needs_hypercorn_adapter(STATUS)
async def test_first_send_after_the_clients_close_raises_outside_async_with(
    serve: Serve,
) -> None:
    view = SendAfterClose()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()  # Bocadillo's docs: accept, no `async with`
        await ws.send_text("hello")
        await view.after_close(ws)
        view.done.set()

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        await _close_then_signal(server.url, view)
    assert view.seen == [WebSocketState.DISCONNECTED, 4001, (4001, "bye")]


@pytest.mark.needs_hypercorn_adapter(STATUS)
async def test_first_send_after_the_clients_close_raises_inside_async_with(
    serve: Serve,
) -> None:
    view = SendAfterClose()

    async def handler(ws: WebSocket) -> None:
        try:
            async with ws:
                await ws.send_text("hello")
                await view.after_close(ws)
        finally:
            view.done.set()

    server = await serve(websocket_app(handler, caught_close_codes=all))
    with trio.fail_after(TIMEOUT):
        await _close_then_signal(server.url, view)
    assert view.seen == [WebSocketState.DISCONNECTED, 4001, (4001, "bye")]


@pytest.mark.needs_hypercorn_adapter(STATUS)
async def test_messages_sent_before_the_close_are_still_received(serve: Serve) -> None:
    view = SendAfterClose()
    received: list[object] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hello")
        await view.client_closed.wait()
        assert ws.state is WebSocketState.DISCONNECTED
        try:
            while True:
                received.append(await ws.receive_text())
        except WebSocketDisconnect as exc:
            received.append(exc.code)
        view.done.set()

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            assert await client.get_message() == "hello"
            await client.send_message("one")
            await client.send_message("two")
            await client.aclose(4002)
        view.client_closed.set()
        await view.done.wait()
    assert received == ["one", "two", 4002]


async def test_a_cancelled_close_still_sends_its_frame(serve: Serve) -> None:
    states: list[WebSocketState] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with trio.CancelScope() as scope:
            scope.cancel()
            await ws.close(4003, "cancelled, sent anyway")
        states.append(ws.state)
        await ws.ensure_closed()  # nothing left to do

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert states == [WebSocketState.CLOSED]
    assert close_of(closed) == (4003, "cancelled, sent anyway")  # not 1006


async def test_a_view_cancelled_while_it_closes_still_closes(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/")
    async def view(ws: WebSocket) -> None:
        await ws.accept()
        ws.nursery.cancel_scope.cancel()
        await ws.close(4003)

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/") as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        async with connect(server.url + "/") as client:  # the server goes on
            with pytest.raises(ConnectionClosed):
                await client.get_message()
    assert close_of(closed) == (4003, "")  # not 1006


async def test_cancelling_the_connections_nursery_closes_1001(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/")
    async def view(ws: WebSocket) -> None:
        await ws.send_text("hello")
        ws.nursery.cancel_scope.cancel()
        await trio.sleep_forever()

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/") as client:
            assert await client.get_message() == "hello"
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed)[0] == 1001


@pytest.mark.parametrize(
    ("value_type", "message", "expected"),
    [
        ("text", b"binary", (1003, "expected a text message")),
        ("bytes", "text", (1003, "expected a bytes message")),
        ("json", "{not json", (1007, "invalid JSON")),
    ],
)
async def test_bad_data_from_the_client_is_its_fault(
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    value_type: str,
    message: str | bytes,
    expected: tuple[int, str],
) -> None:
    app = App()

    @app.websocket_route("/", value_type=value_type)
    async def view(ws: WebSocket) -> None:
        await ws.receive()

    @app.websocket_route("/fine")
    async def fine(ws: WebSocket) -> None:
        await ws.send_text("fine")

    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO):
        async with connect(server.url + "/") as client:
            await client.send_message(message)
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        async with connect(server.url + "/fine") as client:
            assert await client.get_message() == "fine"
    assert close_of(closed) == expected
    ours = [record for record in caplog.records if record.name == "trio_bocaws"]
    assert [record.levelno for record in ours] == [logging.WARNING]
    assert ours[0].exc_info is None
    assert "client sent" in ours[0].getMessage()


async def test_close_first_in_an_auto_accept_view_reaches_the_client(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/")
    async def view(ws: WebSocket) -> None:
        await ws.close(4001, "bad token")

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/") as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (4001, "bad token")  # Bocadillo's, not an HTTP 403


@pytest.mark.usefixtures("without_hypercorn_fixes")
async def test_without_the_adapter_a_send_only_view_still_learns_the_client_left(
    serve: Serve,
) -> None:
    """hypercorn as it is drops sends to a closed connection without a checkpoint: the
    core's fallback (a reader from the second send in a row, a checkpoint per such send)
    ends the loop, and the worker goes on serving."""
    app = App()
    ended: list[int] = []
    done = trio.Event()

    @app.websocket_route("/ticks", caught_close_codes=all)
    async def ticks(ws: WebSocket) -> None:
        try:
            while True:
                await ws.send_text("tick")
        except WebSocketDisconnect as exc:
            ended.append(exc.code)
            raise
        finally:
            done.set()

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/ticks") as client:
            assert await client.get_message() == "tick"
        await done.wait()
        async with connect(server.url + "/echo") as client:
            await client.send_message("still here")
            assert await client.get_message() == "still here"
    assert ended == [1006]  # hypercorn alone reports every close as 1006
