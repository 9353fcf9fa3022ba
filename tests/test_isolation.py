"""One connection's trouble stays in that connection.

Each test runs a real server, a bystander WebSocket (HTTP/1.1, trio-websocket) that keeps
echoing while another client does something hypercorn did not expect, and then checks
that the bystander still echoes and that a new connection is served. Before the adapter's
fixes, each of these stopped the whole server.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import h2.errors
import h2.events
import pytest
import trio

from trio_bocaws import App, AppConfig, WebSocket

from .conftest import Server, connect
from .h2_raw import H2Raw
from .raw_client import masked_frame, raw_connection

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 10


def _app() -> App:
    app = App(config=AppConfig(allowed_origins=("https://good.example",)))

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send_text(message)

    @app.websocket_route("/close-first")
    async def close_first(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4000, "bye")

    return app


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@asynccontextmanager
async def _bystander(
    server: Server, origin: bytes | None = b"https://good.example"
) -> AsyncIterator[list[int]]:
    """An HTTP/1.1 WebSocket echoing in a loop for the block; yields the echo count.
    After the block it must still echo, and a new connection must be served."""
    echoes = [0]
    stop = trio.Event()
    async with connect(server.url + "/echo") as client:
        async with trio.open_nursery() as nursery:

            async def keep_echoing() -> None:
                while not stop.is_set():  # a whole round trip each time
                    await client.send_message(f"ping {echoes[0]}")
                    assert await client.get_message() == f"ping {echoes[0]}"
                    echoes[0] += 1

            nursery.start_soon(keep_echoing)
            yield echoes
            stop.set()
        await client.send_message("still there?")
        assert await client.get_message() == "still there?"
    async with connect(server.url + "/echo") as newcomer:
        await newcomer.send_message("new")
        assert await newcomer.get_message() == "new"
    h2_newcomer = await H2Raw.open(_port(server))
    async with h2_newcomer.stream:
        stream_id = h2_newcomer.websocket("/echo", [(b"origin", origin)] if origin else [])
        await h2_newcomer.flush()
        assert await h2_newcomer.response(stream_id) == 200


async def _data_after_the_end(client: H2Raw, stream_id: int, data: bytes) -> Any:
    """Send DATA on a stream whose response has ended; return the server's answer (a
    StreamReset, or None if the connection went)."""
    await client.wait_for(
        lambda event: isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id
    )
    client.connection.send_data(stream_id, data)
    await client.flush()
    return await client.wait_for(
        lambda event: (
            isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated))
            and getattr(event, "stream_id", stream_id) == stream_id
        )
    )


async def test_a_client_answering_the_views_close_over_http2(serve: Serve) -> None:
    server = await serve(_app())
    with trio.fail_after(TIMEOUT):
        async with _bystander(server):
            client = await H2Raw.open(_port(server))
            async with client.stream:
                stream_id = client.websocket(
                    "/close-first", [(b"origin", b"https://good.example")]
                )
                await client.flush()
                assert await client.response(stream_id) == 200
                # RFC 6455: the client answers the server's close frame with its own.
                answer = await _data_after_the_end(
                    client, stream_id, masked_frame(0x8, (4000).to_bytes(2, "big"))
                )
                received = b"".join(
                    event.data
                    for event in client.events
                    if isinstance(event, h2.events.DataReceived)
                )
                assert received.startswith(b"\x88\x05\x0f\xa0bye")  # the view's 4000 "bye"
                assert isinstance(answer, h2.events.StreamReset)
                assert answer.error_code == h2.errors.ErrorCodes.NO_ERROR
                # The connection goes on.
                client.connection.ping(b"12345678")
                await client.flush()
                assert await client.wait_for(
                    lambda event: isinstance(event, h2.events.PingAckReceived)
                )


async def test_data_after_a_refused_http2_handshake(serve: Serve) -> None:
    server = await serve(_app())
    with trio.fail_after(TIMEOUT):
        async with _bystander(server):
            client = await H2Raw.open(_port(server))
            async with client.stream:
                stream_id = client.websocket("/echo", [(b"origin", b"https://evil.example")])
                await client.flush()
                assert await client.response(stream_id) == 403  # the Origin check
                answer = await _data_after_the_end(client, stream_id, b"x")
                assert isinstance(answer, h2.events.StreamReset)


async def test_more_body_after_an_http2_404(serve: Serve) -> None:
    server = await serve(_app())
    with trio.fail_after(TIMEOUT):
        async with _bystander(server):
            client = await H2Raw.open(_port(server))
            async with client.stream:
                stream_id = client.request(
                    [
                        (b":method", b"POST"),
                        (b":scheme", b"http"),
                        (b":path", b"/nowhere"),
                        (b":authority", b"127.0.0.1"),
                    ],
                    end_stream=False,
                )
                client.connection.send_data(stream_id, b"part one")
                await client.flush()
                assert await client.response(stream_id) == 404
                # Half the connection's window in two full frames: unless the server gives
                # those bytes back, the connection's window shrinks for good.
                client.connection.send_data(stream_id, b"2" * 16384)
                answer = await _data_after_the_end(client, stream_id, b"3" * 16384)
                assert isinstance(answer, h2.events.StreamReset)
                assert answer.error_code == h2.errors.ErrorCodes.NO_ERROR
                given_back = await client.wait_for(
                    lambda event: (
                        isinstance(event, h2.events.WindowUpdated) and event.stream_id == 0
                    )
                )
                assert given_back.delta >= 2 * 16384


async def test_a_bug_in_one_connection_is_logged_once_and_ends_only_it(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug nobody has found yet, simulated: the HTTP/1.1 layer raises for one client."""
    from hypercorn.events import RawData
    from hypercorn.protocol.h11 import H11Protocol

    own_handle = H11Protocol.handle

    async def handle(self: Any, event: Any) -> None:
        if isinstance(event, RawData) and b"x-boom" in event.data:
            raise RuntimeError("a bug in the HTTP/1.1 layer")
        await own_handle(self, event)

    monkeypatch.setattr(H11Protocol, "handle", handle)
    server = await serve(_app())
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO):
        async with _bystander(server):
            stream = await trio.open_tcp_stream("127.0.0.1", _port(server))
            async with stream:
                peer = f"127.0.0.1:{stream.socket.getsockname()[1]}"
                await stream.send_all(
                    b"GET /echo HTTP/1.1\r\nHost: x\r\nx-boom: 1\r\n"
                    b"authorization: Bearer secret-token\r\n\r\n"
                )
                with contextlib.suppress(trio.BrokenResourceError):  # a reset: as good
                    assert await stream.receive_some() == b""  # closed, no answer
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    [record] = errors
    assert record.name == "trio_bocaws"
    assert peer in record.getMessage()
    assert "secret-token" not in caplog.text


async def test_a_bug_under_http2_ends_that_connection_with_goaway(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hypercorn.protocol.h2 import H2Protocol

    own_create = H2Protocol._create_stream

    async def create(self: Any, request: Any) -> None:
        if (b":path", b"/boom") in request.headers:
            raise RuntimeError("a bug in the HTTP/2 layer")
        await own_create(self, request)

    monkeypatch.setattr(H2Protocol, "_create_stream", create)
    server = await serve(_app())
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO):
        async with _bystander(server):
            client = await H2Raw.open(_port(server))
            async with client.stream:
                client.websocket("/boom", [(b"origin", b"https://good.example")])
                await client.flush()
                ended = await client.wait_for(
                    lambda event: isinstance(event, h2.events.ConnectionTerminated)
                )
    assert ended.error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert len([record for record in caplog.records if record.levelno >= logging.ERROR]) == 1


async def test_a_bug_in_one_websocket_closes_it_with_1011(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hypercorn.protocol.events import Data
    from hypercorn.protocol.ws_stream import WSStream

    own_handle = WSStream.handle  # the stream, which the lean read loop feeds directly

    async def handle(self: Any, event: Any) -> None:
        if isinstance(event, Data) and b"boom" in event.data:  # unmasked by a zero mask
            raise RuntimeError("a bug in the WebSocket layer")
        await own_handle(self, event)

    monkeypatch.setattr(WSStream, "handle", handle)
    server = await serve(_app())
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO):
        async with _bystander(server):
            stream = await raw_connection(server.url, "/echo")
            async with stream:
                await stream.send_all(masked_frame(0x1, b"boom"))
                received = b""
                with contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await stream.receive_some():
                        received += chunk
    assert received.startswith(b"\x88\x02\x03\xf3")  # a close frame, 1011
    assert len([record for record in caplog.records if record.levelno >= logging.ERROR]) == 1


@pytest.mark.parametrize(
    "command",
    [
        ["trio_bocaws", "examples.echo:app", "--bind", "127.0.0.1:0"],
        ["hypercorn", "--worker-class", "trio", "-b", "127.0.0.1:0", "examples.echo:app"],
    ],
    ids=["trio_bocaws", "hypercorn"],
)
async def test_each_command_line_survives_data_after_the_end(command: list[str]) -> None:
    """The guard and the HTTP/2 fix hold in worker processes too: there, importing the
    app (and so trio_bocaws) is the only hook."""
    from .subprocesses import server_process

    async with server_process(command) as process:
        server = Server(process.url, trio.Event(), trio.Event())
        with trio.fail_after(TIMEOUT):
            async with _bystander(server, origin=None):
                client = await H2Raw.open(_port(server))
                async with client.stream:
                    stream_id = client.request(
                        [
                            (b":method", b"POST"),
                            (b":scheme", b"http"),
                            (b":path", b"/nowhere"),
                            (b":authority", b"127.0.0.1"),
                        ],
                        end_stream=False,
                    )
                    await client.flush()
                    assert await client.response(stream_id) == 404
                    answer = await _data_after_the_end(client, stream_id, b"more body")
                    assert isinstance(answer, h2.events.StreamReset), process.log()
        assert await process.stop() == 0
