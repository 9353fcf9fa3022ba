"""Endpoint classes on a real hypercorn server: each hook, the route's typed messages, the
connection's nursery, a view's close semantics; and the typed chat example."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from examples import typed_chat
from trio_bocaws import App, MessageValidationError, WebSocket, WebSocketEndpoint, handles
from trio_bocaws.testing import ConnectionClosed as ClosedInTestClient
from trio_bocaws.testing import TestClient

from .conftest import Server, close_of, connect

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 5


@attrs.frozen
class Ping:
    type: Literal["ping"]
    n: int


@attrs.frozen
class Note:
    type: Literal["note"]
    text: str


@attrs.frozen
class Out:
    type: Literal["out"]
    what: str


def recording_app() -> tuple[App, list[Any], trio.MemoryReceiveChannel[int | None]]:
    """An app whose endpoint records its hooks' calls; the channel gets on_disconnect's
    codes, so that a test can wait for the hook instead of polling."""
    app = App()
    calls: list[Any] = []
    disconnects, disconnected = trio.open_memory_channel[int | None](math.inf)

    class Recorder(WebSocketEndpoint):
        async def on_connect(self, ws: WebSocket, room: str, limit: int = 3) -> None:
            calls.append(("connect", room, limit))
            self.room = room
            await ws.accept()
            ws.nursery.start_soon(self.tick, ws)

        async def tick(self, ws: WebSocket) -> None:
            await ws.send(Out("out", f"welcome to {self.room}"))

        @handles(Ping)
        async def on_ping(self, ws: WebSocket, message: Ping) -> None:
            calls.append(("ping", message.n))
            await ws.send(Out("out", f"pong {message.n}"))

        @handles(Note)
        async def on_note(self, ws: WebSocket, message: Note) -> None:
            calls.append(("note", message.text))
            if message.text == "crash":
                raise LookupError("a bug in the endpoint")
            if message.text == "bye":
                await ws.close(4001, "as you wish")

        async def on_invalid_message(self, ws: WebSocket, error: MessageValidationError) -> None:
            calls.append(("invalid", error.errors[0][0]))
            await ws.send(Out("out", str(error)))

        async def on_disconnect(self, ws: WebSocket, code: int | None) -> None:
            calls.append(("disconnect", code))
            disconnects.send_nowait(code)

    app.add_websocket_route("/rooms/{room}", Recorder, receive_type=Ping | Note, send_type=Out)
    return app, calls, disconnected


async def test_each_hook_of_an_endpoint_class(serve: Serve) -> None:
    app, calls, disconnected = recording_app()
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/rooms/den?limit=7") as client:
            # Sent by a task in the connection's nursery, started by on_connect.
            assert json.loads(await client.get_message()) == {
                "type": "out",
                "what": "welcome to den",
            }
            await client.send_message('{"type": "ping", "n": 1}')
            assert json.loads(await client.get_message())["what"] == "pong 1"
            await client.send_message('{"type": "ping", "n": "one"}')
            assert json.loads(await client.get_message())["what"] == (
                'invalid message: $.n: expected int, got "one"'
            )
            await client.send_message('{"type": "note", "text": "hi"}')
            await client.send_message('{"type": "ping", "n": 2}')
            assert json.loads(await client.get_message())["what"] == "pong 2"
        # The client's close code reaches on_disconnect.
        assert await disconnected.receive() == 1000
    assert calls == [
        ("connect", "den", 7),
        ("ping", 1),
        ("invalid", "$.n"),
        ("note", "hi"),
        ("ping", 2),
        ("disconnect", 1000),
    ]


async def test_an_endpoint_closes_as_a_view_does(serve: Serve) -> None:
    app, _, disconnected = recording_app()
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/rooms/a") as client:
            await client.get_message()
            await client.send_message('{"type": "note", "text": "bye"}')
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        assert close_of(closed) == (4001, "as you wish")
        assert await disconnected.receive() is None  # after the endpoint's own close
        async with connect(server.url + "/rooms/b") as client:
            await client.get_message()
            await client.send_message('{"type": "note", "text": "crash"}')
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        assert close_of(closed) == (1011, "")
        assert await disconnected.receive() is None  # and after the crash
        # The route's query parameters are checked before on_connect, as a view's are.
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(server.url + "/rooms/c?limit=many"):
                pass  # pragma: no cover
        assert rejected.value.status_code == 400


async def test_a_message_with_no_handler_is_a_bug_in_the_endpoint(serve: Serve) -> None:
    app = App()

    class OnlyPings(WebSocketEndpoint):
        @handles(Ping)
        async def ping(self, ws: WebSocket, message: Ping) -> None:
            await ws.send_text("pong")

    app.add_websocket_route("/", OnlyPings, receive_type=Ping | Note)
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/") as client:
            await client.send_message('{"type": "note", "text": "x"}')
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (1011, "")


async def test_on_message_may_be_overridden_and_invalid_messages_give_1007(serve: Serve) -> None:
    app = App()

    class Upper(WebSocketEndpoint):
        async def on_message(self, ws: WebSocket, message: Any) -> None:
            await ws.send(message.upper())

    class Strict(WebSocketEndpoint):
        async def on_message(self, ws: WebSocket, message: Any) -> None:
            await ws.send_text("ok")

    app.add_websocket_route("/upper", Upper)
    app.add_websocket_route("/strict", Strict, receive_type=Ping)
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/upper") as client:
            await client.send_message("abc")
            assert await client.get_message() == "ABC"
        async with connect(server.url + "/strict") as client:
            await client.send_message('{"type": "ping"}')
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (1007, "invalid message: $.n: required field missing")


async def test_on_disconnect_still_runs_when_the_server_shuts_down() -> None:
    app = App()
    said_goodbye: list[int | None] = []

    class Polite(WebSocketEndpoint):
        async def on_connect(self, ws: WebSocket) -> None:
            await ws.accept()

        async def on_disconnect(self, ws: WebSocket, code: int | None) -> None:
            await trio.lowlevel.checkpoint()  # cancelled here, were it not shielded
            said_goodbye.append(code)

    app.add_websocket_route("/", Polite)
    with trio.fail_after(TIMEOUT):
        async with TestClient(app) as client, client.websocket_connect("/") as ws:
            client.begin_shutdown()
            with pytest.raises(ClosedInTestClient) as closed:
                await ws.receive_text()
    assert closed.value.code == 1001
    assert said_goodbye == [None]


def test_handles_takes_classes() -> None:
    with pytest.raises(TypeError, match="@handles takes one or more message classes"):
        handles()
    with pytest.raises(TypeError, match="@handles takes one or more message classes"):
        handles("ping")  # type: ignore[arg-type]


# -- The typed chat example ---------------------------------------------------------------


async def test_the_typed_chat_example(serve: Serve) -> None:
    typed_chat.rooms.clear()
    server = await serve(typed_chat.app)

    async def said(client: Any) -> tuple[str | None, str]:
        message = json.loads(await client.get_message())
        assert message["type"] == "said" and message["at"].endswith("+00:00")
        return message["user"], message["text"]

    with trio.fail_after(TIMEOUT):
        async with (
            connect(server.url + "/chat/lobby") as ann,
            connect(server.url + "/chat/lobby") as bob,
        ):
            await ann.send_message('{"type": "join", "user": "ann"}')
            assert await said(ann) == (None, "ann joined")
            await bob.send_message('{"type": "join", "user": "bob"}')
            assert await said(ann) == (None, "bob joined")
            assert await said(bob) == (None, "bob joined")
            await ann.send_message('{"type": "say", "text": "hi"}')
            assert await said(ann) == ("ann", "hi")
            assert await said(bob) == ("ann", "hi")
            await bob.send_message('{"type": "say"}')
            assert json.loads(await bob.get_message()) == {
                "type": "problem",
                "errors": ["$.text: required field missing"],
            }
            await bob.send_message('{"type": "leave"}')
            with pytest.raises(ConnectionClosed) as closed:
                await bob.get_message()
            assert close_of(closed) == (1000, "")
            assert await said(ann) == (None, "bob left")
        async with connect(server.url + "/chat/lobby") as eve:
            await eve.send_message('{"type": "say", "text": "hello?"}')
            with pytest.raises(ConnectionClosed) as closed:
                await eve.get_message()
            assert close_of(closed) == (4000, "join first")
