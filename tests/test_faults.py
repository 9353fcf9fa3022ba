"""The reliability suite: faults, each with what the client and the app saw, and the server
still serving the other connections afterwards."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed

from trio_bocaws import App, ServerConfig, WebSocket, WebSocketDisconnect, serve
from trio_bocaws.testing import TestClient

from .conftest import Server, close_of, connect, receive_from_tasks, send_from_tasks
from .raw_client import masked_frame, raw_connection

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 10


class Watched:
    """An app whose views report how each connection ended."""

    def __init__(self) -> None:
        self.app = App()
        self.ended: list[tuple[str, Any]] = []
        self._send, self._receive = trio.open_memory_channel[tuple[str, Any]](1000)
        app = self.app

        @app.websocket_route("/echo", caught_close_codes=())
        async def echo(ws: WebSocket) -> None:
            try:
                async for message in ws:
                    await ws.send(message)
            except WebSocketDisconnect as exc:
                self._report(("disconnect", exc.code))
            except trio.Cancelled:
                self._report(("cancelled", None))
                raise

    def _report(self, outcome: tuple[str, Any]) -> None:
        self.ended.append(outcome)
        self._send.send_nowait(outcome)

    async def next_end(self) -> tuple[str, Any]:
        return await self._receive.receive()


async def still_serving(url: str) -> None:
    async with connect(url + "/echo") as client:
        await client.send_message("still here?")
        assert await client.get_message() == "still here?"


# -- The client closes -----------------------------------------------------------------------


# Every code a client may send that wsproto (under hypercorn) accepts: 1014 it does not.
CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013]
CLOSE_CODES += [3000, 3999, 4000, 4999]


async def test_client_close_codes_of_every_class_reach_the_app(serve: Serve) -> None:
    watched = Watched()
    server = await serve(watched.app)
    with trio.fail_after(TIMEOUT):
        for code in CLOSE_CODES:
            async with connect(server.url + "/echo") as client:
                await client.aclose(code, f"closing with {code}")
            assert await watched.next_end() == ("disconnect", code)
        await still_serving(server.url)


async def test_a_tcp_drop_without_close_frame_is_1006(serve: Serve) -> None:
    watched = Watched()
    server = await serve(watched.app)
    with trio.fail_after(TIMEOUT):
        stream = await raw_connection(server.url)
        await stream.aclose()  # the network goes away: no close frame
        assert await watched.next_end() == ("disconnect", 1006)
        await still_serving(server.url)


async def _send_invalid_utf8(serve: Serve) -> tuple[bytes, tuple[str, Any]]:
    """A text frame that is not UTF-8: what the client read until the end of the stream,
    and how the app's view ended."""
    watched = Watched()
    server = await serve(watched.app)
    with trio.fail_after(TIMEOUT):
        stream = await raw_connection(server.url)
        async with stream:
            await stream.send_all(masked_frame(0x1, b"\xff\xfe not UTF-8"))
            received = b""
            while chunk := await stream.receive_some():
                received += chunk
        ended = await watched.next_end()
        await still_serving(server.url)
    return received, ended


async def test_invalid_utf8_in_a_text_frame_is_closed_with_1007(serve: Serve) -> None:
    received, ended = await _send_invalid_utf8(serve)
    assert received[0] == 0x88, received  # a close frame (FIN, opcode 8), then the end
    length = received[1]
    assert len(received) == 2 + length
    assert int.from_bytes(received[2:4], "big") == 1007
    assert received[4:].decode()  # wsproto's reason, UTF-8
    assert ended == ("disconnect", 1007)


@pytest.mark.usefixtures("without_hypercorn_fixes")
async def test_without_the_fixes_invalid_utf8_gets_no_close_frame(serve: Serve) -> None:
    """hypercorn only answers closes the client sent: it drops the TCP connection."""
    received, ended = await _send_invalid_utf8(serve)
    assert received == b""
    assert ended == ("disconnect", 1006)


# -- The handler fails or is cut short -----------------------------------------------------------


async def test_a_handler_that_raises_or_is_cancelled_by_a_timeout(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/raise")
    async def fails(ws: WebSocket) -> None:
        await ws.receive_text()
        raise RuntimeError("handler bug")

    @app.websocket_route("/timeout")
    async def times_out(ws: WebSocket) -> None:
        with trio.move_on_after(0.1):
            async with ws:
                await ws.receive_text()  # the client says nothing
        await trio.lowlevel.checkpoint()

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/raise") as client:
            await client.send_message("go")
            with pytest.raises(ConnectionClosed) as raised:
                await client.get_message()
        async with connect(server.url + "/timeout") as client:
            with pytest.raises(ConnectionClosed) as timed_out:
                await client.get_message()
        await still_serving(server.url)
    assert close_of(raised)[0] == 1011
    assert close_of(timed_out)[0] == 1001


# -- Shutdown with many connections ------------------------------------------------------------


async def test_shutdown_with_100_connections_open(nursery: trio.Nursery) -> None:
    watched = Watched()
    stop = trio.Event()
    config = ServerConfig(bind="127.0.0.1:0", graceful_timeout=30)
    done = trio.Event()

    async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(watched.app, config, shutdown_trigger=stop.wait, task_status=task_status)
        finally:
            done.set()

    [url] = await nursery.start(run_server)
    closes: list[tuple[int, str]] = []
    connected = 0
    all_connected = trio.Event()

    async def client() -> None:
        nonlocal connected
        async with connect(url + "/echo") as connection:
            await connection.send_message("hi")
            assert await connection.get_message() == "hi"
            connected += 1
            if connected == 100:
                all_connected.set()
            with pytest.raises(ConnectionClosed) as closed:
                await connection.get_message()
            closes.append(close_of(closed))

    with trio.fail_after(TIMEOUT):  # a third of the grace period: closing must not wait
        async with trio.open_nursery() as clients:
            for _ in range(100):
                clients.start_soon(client)
            await all_connected.wait()
            stop.set()
            await done.wait()
    assert closes == [(1001, "server shutting down")] * 100
    assert watched.ended == [("cancelled", None)] * 100


# -- A client that stops reading -----------------------------------------------------------------


async def test_a_client_that_stops_reading_is_dropped_and_memory_stays_bounded(
    nursery: trio.Nursery,
) -> None:
    """hypercorn's writes cannot be cancelled; with write_timeout the kernel gives up on a
    client that leaves its receive window shut, the blocked send fails, and neither the
    handler nor the shutdown is held any longer than that."""
    app = App()
    outcome: list[Any] = []
    ended = trio.Event()
    sent = 0
    chunk = b"x" * 4096

    @app.websocket_route("/firehose", value_type="bytes", caught_close_codes=())
    async def firehose(ws: WebSocket) -> None:
        nonlocal sent
        try:
            while True:
                await ws.send(chunk)
                sent += len(chunk)
        except WebSocketDisconnect as exc:
            outcome.append(exc.code)
        finally:
            ended.set()

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    stop = trio.Event()
    config = ServerConfig(bind="127.0.0.1:0", write_timeout=1.0, graceful_timeout=30)
    [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
    with trio.fail_after(TIMEOUT):
        stream = await raw_connection(url, "/firehose")
        async with stream:
            # Never read again. The handler blocks once the buffers are full; meanwhile
            # the server goes on serving others.
            await trio.sleep(0.3)
            await still_serving(url)
            await ended.wait()
            await still_serving(url)
    assert outcome == [1006]
    # Memory stays bounded: no more than the socket buffers took before sends blocked.
    assert sent < 8 * 2**20, sent
    stop.set()


# -- Many senders on one connection --------------------------------------------------------------


async def test_many_tasks_sending_on_one_connection_deliver_every_message_whole(
    serve: Serve,
) -> None:
    app = App()
    senders, per_sender = 10, 50

    def payload(sender: int, number: int) -> bytes:
        size = (sender * 7919 + number * 104729) % 70_000  # up to 68 KiB, many frame sizes
        return f"{sender}:{number}:".encode() + hashlib.sha256(
            f"{sender}{number}".encode()
        ).digest() * (size // 32)

    @app.websocket_route("/burst", value_type="bytes")
    async def burst(ws: WebSocket) -> None:
        await ws.accept()
        await send_from_tasks(ws, senders, per_sender, payload)
        await ws.receive()  # until the client is done

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/burst", max_message_size=2**20) as client:
            # Each message whole, not interleaved; each sender's in its order.
            order = await receive_from_tasks(client.get_message, senders, per_sender, payload)
            await client.send_message(b"done")
    assert order == {index: list(range(per_sender)) for index in range(senders)}


# -- Property tests: what goes in comes out ------------------------------------------------------


def _echo_app(value_type: str) -> App:
    app = App()

    @app.websocket_route("/echo", value_type=value_type)
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    return app


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # what JSON can carry
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_settings = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(messages=st.lists(st.text(), min_size=1, max_size=5))
def test_text_round_trips(messages: list[str]) -> None:
    trio.run(_round_trip, "text", messages)


@_settings
@given(messages=st.lists(st.binary(max_size=2048), min_size=1, max_size=5))
def test_bytes_round_trips(messages: list[bytes]) -> None:
    trio.run(_round_trip, "bytes", messages)


@_settings
@given(messages=st.lists(json_values, min_size=1, max_size=5))
def test_json_round_trips(messages: list[Any]) -> None:
    trio.run(_round_trip, "json", messages)


async def _round_trip(value_type: str, messages: list[Any]) -> None:
    client = TestClient(_echo_app(value_type), timeout=2)
    async with client.websocket_connect("/echo") as ws:
        for message in messages:
            if value_type == "text":
                await ws.send_text(message)
                assert await ws.receive_text() == message
            elif value_type == "bytes":
                await ws.send_bytes(message)
                assert await ws.receive_bytes() == message
            else:
                await ws.send_json(message)
                assert await ws.receive_json() == json.loads(json.dumps(message))
