"""WebSockets over HTTP/2 (RFC 8441), tested as HTTP/1.1 is: a real server, the test
client of :mod:`tests.h2_client`, and what that client saw."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import h2.errors
import pytest
import trio
import trio.testing
import trustme

from trio_bocaws import (
    App,
    AppConfig,
    RejectConnection,
    ServerConfig,
    WebSocket,
    WebSocketDisconnect,
    serve,
)
from trio_bocaws._cli import _parser

from .conftest import connect, receive_from_tasks, send_from_tasks, waiting_app
from .h2_client import H2Connection, NotHTTP2, Rejected, StreamClosed, open_h2_connection
from .raw_client import masked_frame

TIMEOUT = 5


def echo_app(seen: list[tuple[str, str]] | None = None, **config: Any) -> App:
    """Echo routes for text and bytes; each records its scope's HTTP version and scheme."""
    app = App(config=AppConfig(**config))

    @app.websocket_route("/text")
    async def text(ws: WebSocket) -> None:
        if seen is not None:
            seen.append((ws.scope["http_version"], ws.scope["scheme"]))
        async for message in ws:
            await ws.send(message)

    @app.websocket_route("/bytes", value_type="bytes")
    async def binary(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    return app


@asynccontextmanager
async def running(
    app: Callable[..., Awaitable[None]], **options: Any
) -> AsyncIterator[tuple[str, trio.Event]]:
    """``serve(app)`` on 127.0.0.1:0 for the block; yields its URL and its stop event, and
    on exit stops it and waits for it to return."""
    config = ServerConfig(bind="127.0.0.1:0", log_level="warning", **options)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield url, stop
        finally:
            stop.set()


async def echoes(connection: H2Connection, path: str, message: str | bytes) -> None:
    """A new WebSocket on ``connection`` echoes ``message`` and closes cleanly."""
    ws = await connection.websocket(path)
    await ws.send(message)
    assert await ws.receive() == message
    assert await ws.close() == (1000, "")


# -- Echo, close, several streams ---------------------------------------------------------


async def test_echo_text_and_bytes_on_streams_of_one_connection() -> None:
    seen: list[tuple[str, str]] = []
    with trio.fail_after(TIMEOUT):
        async with running(echo_app(seen)) as (url, _), open_h2_connection(url) as connection:
            text = await connection.websocket("/text")
            binary = await connection.websocket("/bytes")
            for number in range(3):
                await text.send(f"hello {number}")
                await binary.send(bytes([number]) * 70_000)  # more than one DATA frame
                assert await binary.receive() == bytes([number]) * 70_000
                assert await text.receive() == f"hello {number}"
            assert (text.stream_id, binary.stream_id) == (1, 3)
            assert await text.close() == (1000, "")
            assert await binary.close() == (1000, "")
    assert seen == [("2", "ws")]


async def test_the_clients_close_code_and_reason_reach_the_view() -> None:
    outcomes: list[tuple[int, str]] = []
    app = App()

    @app.websocket_route("/wait", caught_close_codes=())
    async def wait(ws: WebSocket) -> None:
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            outcomes.append((exc.code, exc.reason))
            raise

    with trio.fail_after(TIMEOUT):
        async with running(app) as (url, _), open_h2_connection(url) as connection:
            first = await connection.websocket("/wait")
            second = await connection.websocket("/wait")
            assert await first.close(4001, "bye now") == (4001, "bye now")
            assert await second.close(1000, "") == (1000, "")
    assert sorted(outcomes) == [(1000, ""), (4001, "bye now")]


async def test_more_websockets_than_the_stream_limit_over_one_connection() -> None:
    """hypercorn allows 100 concurrent streams; WebSockets the client closed must stop
    counting (the server ends its half of each), or the 101st cannot open."""
    with trio.fail_after(4 * TIMEOUT):
        async with running(echo_app()) as (url, _), open_h2_connection(url) as connection:
            for number in range(120):
                await echoes(connection, "/text", f"socket {number}")


# -- Refusals ------------------------------------------------------------------------------


def guarded_app() -> App:
    def authenticate(ws: WebSocket) -> str:
        if ws.query_params.get("token") != "s3cret":
            raise RejectConnection(401, "log in first", headers={"www-authenticate": "Bearer"})
        return "ada"

    app = App(authenticate=authenticate)

    @app.websocket_route("/me")
    async def me(ws: WebSocket) -> None:
        await ws.send_text(f"you are {ws.user}")
        await ws.receive_text()

    return app


async def test_refusals_carry_status_headers_and_body_and_the_connection_goes_on() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(guarded_app()) as (url, _), open_h2_connection(url) as connection:
            with pytest.raises(Rejected) as unauthenticated:
                await connection.websocket("/me")
            with pytest.raises(Rejected) as cross_origin:
                await connection.websocket(
                    "/me?token=s3cret", headers=[("origin", "https://evil.example")]
                )
            with pytest.raises(Rejected) as unknown:
                await connection.websocket("/nowhere")
            # A refused stream leaves the connection, and the server, serving.
            ws = await connection.websocket("/me?token=s3cret")
            assert await ws.receive() == "you are ada"
            assert await ws.close() == (1000, "")
    assert (unauthenticated.value.status, unauthenticated.value.body) == (401, b"log in first")
    assert (b"www-authenticate", b"Bearer") in unauthenticated.value.headers
    assert cross_origin.value.status == 403
    assert cross_origin.value.body == b"origin 'https://evil.example' may not open this WebSocket"
    assert (unknown.value.status, unknown.value.body) == (403, b"no WebSocket route for /nowhere")


async def test_a_page_of_the_same_origin_may_connect() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(guarded_app()) as (url, _), open_h2_connection(url) as connection:
            page = url.replace("ws://", "http://", 1)  # the :authority the client sends
            ws = await connection.websocket("/me?token=s3cret", headers=[("origin", page)])
            assert await ws.receive() == "you are ada"
            await ws.close()


async def test_a_message_over_the_limit_closes_its_stream_with_1009() -> None:
    outcomes: list[int] = []
    app = App()

    @app.websocket_route("/big", caught_close_codes=())
    async def big(ws: WebSocket) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except WebSocketDisconnect as exc:
            outcomes.append(exc.code)
            raise

    with trio.fail_after(TIMEOUT):
        async with (
            running(app, max_message_size=1024) as (url, _),
            open_h2_connection(url) as connection,
        ):
            small, large = await connection.websocket("/big"), await connection.websocket("/big")
            await large.send("x" * 2000)
            with pytest.raises(StreamClosed) as closed:
                await large.receive()
            await small.send("y" * 1000)  # the other stream is within the limit
            assert await small.receive() == "y" * 1000
            await small.close()
    assert closed.value.code == 1009
    assert sorted(outcomes) == [1000, 1009]  # the small stream closed normally


# -- TLS -----------------------------------------------------------------------------------


def certificate_files(tmp_path: Path) -> tuple[trustme.CA, str, str]:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    certificate.private_key_pem.write_to_path(str(keyfile))
    return authority, str(certfile), str(keyfile)


async def test_wss_negotiates_h2_through_alpn(tmp_path: Path) -> None:
    authority, certfile, keyfile = certificate_files(tmp_path)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    seen: list[tuple[str, str]] = []
    with trio.fail_after(TIMEOUT):
        async with (
            running(echo_app(seen), certfile=certfile, keyfile=keyfile) as (url, _),
            open_h2_connection(url, ssl_context=trusting) as connection,
        ):
            assert url.startswith("wss://")
            assert connection.alpn == "h2"
            await echoes(connection, "/text", "over TLS")
            await echoes(connection, "/bytes", b"\x00\xff")
    assert seen == [("2", "wss")]


# -- Several tasks sending on one stream ----------------------------------------------------


@pytest.mark.parametrize("senders", [8, 16])
async def test_concurrent_senders_on_one_stream_all_arrive_whole(senders: int) -> None:
    """Several tasks of the view send on one WebSocket at once, mixed sizes up to 16 KiB:
    every message arrives whole, each task's in its order. The stream's buffer crosses its
    high water mark with several sends waiting on it; one of them used to wait for ever."""
    each = 8
    sizes = (256, 2048, 16384, 700, 5000, 1024, 9000, 300)
    app = echo_app()

    def message(task: int, index: int) -> str:
        return f"{task}:{index}:" + chr(65 + task % 26) * sizes[(task + index) % len(sizes)]

    @app.websocket_route("/burst")
    async def burst(ws: WebSocket) -> None:
        await send_from_tasks(ws, senders, each, message)
        await ws.receive_text()

    with trio.fail_after(TIMEOUT):
        async with running(app) as (url, _), open_h2_connection(url) as connection:
            ws = await connection.websocket("/burst")
            received = await receive_from_tasks(ws.receive, senders, each, message)
            await ws.send("done")
            assert await ws.close() == (1000, "")
            await echoes(connection, "/text", "a new stream after the burst")
    assert received == {task: list(range(each)) for task in range(senders)}


# -- A client that stops reading one stream --------------------------------------------------


async def test_a_stream_whose_window_stays_shut_is_dropped_and_the_others_go_on() -> None:
    """The client stops reading one stream while its connection flows on: the view's send
    blocks once the stream's window and two frames of buffer are full, the stream is reset
    after write_timeout, the view sees 1006, and the other stream echoes throughout."""
    outcomes: list[int] = []
    sent = 0
    ended = trio.Event()
    app = echo_app()

    @app.websocket_route("/firehose", value_type="bytes", caught_close_codes=())
    async def firehose(ws: WebSocket) -> None:
        nonlocal sent
        try:
            while True:
                await ws.send(b"x" * 4096)
                sent += 4096
        except WebSocketDisconnect as exc:
            outcomes.append(exc.code)
        finally:
            ended.set()

    with trio.fail_after(TIMEOUT):
        async with (
            running(app, write_timeout=0.5) as (url, _),
            open_h2_connection(url) as connection,
        ):
            echo = await connection.websocket("/text")
            firehose_ws = await connection.websocket("/firehose")
            firehose_ws.stop_reading()
            number = 0
            while not ended.is_set():
                number += 1
                await echo.send(f"still here {number}")
                assert await echo.receive() == f"still here {number}"
            # The reset went out before the view was told; a round trip on the same
            # connection after it makes sure the client has read it.
            await echoes(connection, "/text", "a new stream")
            assert firehose_ws.reset == h2.errors.ErrorCodes.CANCEL
            await echo.close()
    assert outcomes == [1006]
    # What was sent fits in the stream's window (64 KiB) and its buffer (two frames),
    # give or take what the view sent after the reset and before it was told.
    assert sent <= 64 * 1024 + 2 * 16384 + 64 * 4096, sent


async def test_data_for_a_stream_that_has_ended_raises_instead_of_vanishing() -> None:
    """hypercorn swallows the KeyError of DATA for a stream whose buffer is gone, without a
    checkpoint: a view that only sends spun on a reset stream. Now the send raises the
    OSError of a closed stream, after a checkpoint."""
    from hypercorn.protocol.events import Data
    from hypercorn.protocol.h2 import H2Protocol

    from trio_bocaws._stream_status import StreamClosedError

    protocol = object.__new__(H2Protocol)  # only what stream_send reads for DATA
    protocol.stream_buffers = {}
    with trio.testing.assert_checkpoints(), pytest.raises(StreamClosedError, match="stream 7"):
        await protocol.stream_send(Data(stream_id=7, data=b"lost"))


async def test_a_connection_closed_with_a_stalled_stream_ends_at_once() -> None:
    """The client stops reading one stream, then drops the whole connection: the view's
    blocked send returns and the view sees 1006, and nothing of the connection waits for
    the (long) write timeout, so the shutdown after it is quick."""
    outcomes: list[int] = []
    ended = trio.Event()
    app = App()

    @app.websocket_route("/firehose", value_type="bytes", caught_close_codes=())
    async def firehose(ws: WebSocket) -> None:
        try:
            while True:
                await ws.send(b"x" * 4096)
        except WebSocketDisconnect as exc:
            outcomes.append(exc.code)
        finally:
            ended.set()

    config = ServerConfig(
        bind="127.0.0.1:0", write_timeout=60, graceful_timeout=60, log_level="warning"
    )
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            async with open_h2_connection(url) as connection:
                ws = await connection.websocket("/firehose")
                ws.stop_reading()
                await ws.window_shut.wait()  # the server has more for it, and must wait
            await ended.wait()  # the blocked send returned
            # Then the server stops, and must not wait for the 60 s write timeout.
            stop.set()
    assert outcomes == [1006]


# -- Shutdown --------------------------------------------------------------------------------


async def test_shutdown_closes_every_stream_of_a_shared_connection_with_1001() -> None:
    app, all_waiting, _ = waiting_app(3)
    closes: list[tuple[int, str]] = []

    async def client(ws: Any) -> None:
        with pytest.raises(StreamClosed) as closed:
            await ws.receive()
        closes.append((closed.value.code, closed.value.reason))

    # A long grace period: the shutdown must not need it.
    config = ServerConfig(bind="127.0.0.1:0", graceful_timeout=30, log_level="warning")
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            async with open_h2_connection(url) as connection:
                sockets = [await connection.websocket("/wait") for _ in range(3)]
                async with trio.open_nursery() as clients:
                    for ws in sockets:
                        clients.start_soon(client, ws)
                    await all_waiting.wait()
                    stop.set()
                await connection.closed.wait()  # GOAWAY, then the TCP close
        # serve() has returned.
    assert closes == [(1001, "server shutting down")] * 3


# -- HTTP/1.1 only ---------------------------------------------------------------------------


async def test_http2_off_refuses_the_preface_and_ignores_h2c() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(echo_app(), http2=False) as (url, _):
            with pytest.raises(NotHTTP2) as refused:
                async with open_h2_connection(url):
                    pass  # pragma: no cover
            assert refused.value.received.startswith(b"HTTP/1.1 505 ")
            # An HTTP/1.1 upgrade to h2c is ignored: the request is answered in HTTP/1.1.
            port = int(url.rsplit(":", 1)[1])
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(
                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
                )
                response = await stream.receive_some()
            assert response.startswith(b"HTTP/1.1 404 ")
            # WebSockets over HTTP/1.1 are served as ever.
            async with connect(url + "/text") as client:
                await client.send_message("one")
                assert await client.get_message() == "one"


async def test_http2_off_offers_only_http11_through_alpn(tmp_path: Path) -> None:
    authority, certfile, keyfile = certificate_files(tmp_path)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    with trio.fail_after(TIMEOUT):
        async with running(echo_app(), http2=False, certfile=certfile, keyfile=keyfile) as (
            url,
            _,
        ):
            with pytest.raises(NotHTTP2) as refused:
                async with open_h2_connection(url, ssl_context=trusting):
                    pass  # pragma: no cover
            assert refused.value.alpn is None  # the client offered h2 alone
            port = int(url.rsplit(":", 1)[1])
            trusting.set_alpn_protocols(["h2", "http/1.1"])
            stream = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", port, ssl_context=trusting, https_compatible=True
            )
            async with stream:
                await stream.do_handshake()
                assert stream.selected_alpn_protocol() == "http/1.1"


def test_http2_switch_is_validated_and_reaches_hypercorn() -> None:
    assert _parser().parse_args(["chat:app"]).http2 is True
    assert _parser().parse_args(["chat:app", "--no-http2"]).http2 is False
    assert ServerConfig().to_hypercorn().alpn_protocols == ["h2", "http/1.1"]
    assert ServerConfig(http2=False).to_hypercorn().alpn_protocols == ["http/1.1"]
    with pytest.raises(TypeError, match="http2"):
        ServerConfig(http2="no")  # type: ignore[arg-type]


# -- Shutdown: the clients' close replies, then one GOAWAY ------------------------------------


def _frames(buffer: bytearray) -> list[Any]:
    """Take the whole HTTP/2 frames at the start of ``buffer`` off it, parsed."""
    from hyperframe.frame import Frame

    frames = []
    while len(buffer) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
        if len(buffer) < 9 + length:
            break
        frame.parse_body(memoryview(buffer[9 : 9 + length]))
        del buffer[: 9 + length]
        frames.append(frame)
    return frames


def _server_close(payload: bytes) -> tuple[int, str] | None:
    """The code and reason of a server's (unmasked, short) close frame, else ``None``."""
    if len(payload) >= 4 and payload[0] == 0x88 and payload[1] == len(payload) - 2:
        return int.from_bytes(payload[2:4], "big"), payload[4:].decode()
    return None


async def test_shutdown_waits_for_the_close_replies_then_sends_one_goaway() -> None:
    """Three WebSockets on one connection; the server stops. Each client answers its 1001
    with its own close frame (ending its half of the stream), held until it has seen every
    1001 and a moment more, so that a GOAWAY sent without waiting for the answers comes
    first. The server must take the answers as the streams' end (no PROTOCOL_ERROR), and
    only then send GOAWAY, once, with NO_ERROR, and close."""
    import contextlib

    from hyperframe.frame import DataFrame, GoAwayFrame

    from .h2_raw import H2Raw

    app, all_waiting, _ = waiting_app(3)
    # A long grace period: the shutdown must not need it.
    config = ServerConfig(bind="127.0.0.1:0", graceful_timeout=30, log_level="warning")
    stop = trio.Event()
    closes: dict[int, tuple[int, str]] = {}
    goaways: list[tuple[int, bool]] = []  # (error code, whether the answers had gone out)
    answered = False
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            client = await H2Raw.open(int(url.rsplit(":", 1)[1]))
            streams = [client.websocket("/wait") for _ in range(3)]
            await client.flush()
            for stream_id in streams:
                assert await client.response(stream_id) == 200
            await all_waiting.wait()
            # From here on the frames are read raw: h2 itself would refuse to send
            # anything, or to read DATA, once a GOAWAY has come.
            stop.set()
            buffer = bytearray()

            async def read() -> bool:
                data = b""
                with contextlib.suppress(trio.BrokenResourceError):
                    data = await client.stream.receive_some()
                buffer.extend(data)
                for frame in _frames(buffer):
                    if isinstance(frame, GoAwayFrame):
                        goaways.append((frame.error_code, answered))
                    elif isinstance(frame, DataFrame) and frame.stream_id in streams:
                        close = _server_close(bytes(frame.data))
                        if close is not None:
                            closes[frame.stream_id] = close
                return bool(data)

            while len(closes) < 3 and await read():
                pass
            with trio.move_on_after(0.3):  # a GOAWAY that does not wait comes now
                while not goaways and await read():
                    pass
            answer = masked_frame(0x8, (1001).to_bytes(2, "big"))  # the client's close
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await client.stream.send_all(
                    b"".join(
                        DataFrame(stream_id, data=answer, flags=["END_STREAM"]).serialize()
                        for stream_id in streams
                    )
                )
            answered = True
            while await read():  # until the server closes the connection
                pass
            await client.aclose()
        # serve() has returned.
    assert closes == dict.fromkeys(streams, (1001, "server shutting down"))
    assert goaways == [(h2.errors.ErrorCodes.NO_ERROR, True)]


async def test_a_client_that_does_not_answer_holds_the_shutdown_until_the_grace_period() -> None:
    """The WebSocket's client reads its 1001 and never answers: the connection waits for it
    until ``graceful_timeout``, then closes, and the server stops."""
    from hyperframe.frame import DataFrame

    from .h2_raw import H2Raw

    app, accepted, _ = waiting_app(1)
    config = ServerConfig(bind="127.0.0.1:0", graceful_timeout=0.5, log_level="warning")
    stop = trio.Event()
    closes: list[tuple[int, str]] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            client = await H2Raw.open(int(url.rsplit(":", 1)[1]))
            stream_id = client.websocket("/wait")
            await client.flush()
            assert await client.response(stream_id) == 200
            await accepted.wait()
            stop.set()
            buffer = bytearray()
            while data := await client.stream.receive_some():  # until the server closes
                buffer.extend(data)
                for frame in _frames(buffer):
                    if isinstance(frame, DataFrame):
                        close = _server_close(bytes(frame.data))
                        if close is not None:
                            closes.append(close)
            await client.aclose()
        # serve() has returned.
    assert closes == [(1001, "server shutting down")]


# -- A request read after its connection closed ------------------------------------------------


def _padded(frames: bytes, size: int) -> bytes:
    """``frames`` then HTTP/2 frames of an unknown type (which a server ignores, RFC 9113
    section 5.5), ``size`` bytes in all."""
    padded = bytearray(frames)
    while len(padded) < size:
        length = min(size - len(padded) - 9, 16384)
        padded += length.to_bytes(3, "big") + b"\xfa\x00\x00\x00\x00\x00" + bytes(length)
    assert len(padded) == size
    return bytes(padded)


async def test_a_request_read_after_its_connection_closed_leaves_no_view_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client writes the preface, two PINGs and an extended CONNECT, and closes at once;
    the server reads them in turn. Its answers go to a closed socket: the second one fails,
    which closes the connection and ends its send task; then the server reads the request.
    hypercorn handled it all the same: the view started, and its refusal waited for ever for
    the send task to take it (found by the fuzzer: "HTTP/2 CONNECT to /reject, then close"
    left a view running). The view must learn at once that its client is gone."""
    import socket

    import h2.config
    import h2.connection

    from trio_bocaws._hypercorn import _lean

    read = 1024  # the server reads this much at a time: one read per part below
    monkeypatch.setattr(_lean, "MAX_RECV", read)
    started = ended = 0
    app = App()

    @app.websocket_route("/refuse")
    async def refuse(ws: WebSocket) -> None:
        nonlocal started, ended
        started += 1
        try:
            await ws.reject(403)
        finally:
            ended += 1

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    preface = client.data_to_send()
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
    client.send_headers(
        1,
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/refuse"),
            (":authority", "127.0.0.1"),
            ("sec-websocket-version", "13"),
        ],
    )
    request = client.data_to_send()
    parts = [_padded(preface, read), _padded(ping, read), _padded(ping, read), request]
    with trio.fail_after(TIMEOUT):
        async with running(app, graceful_timeout=1) as (url, _):
            port = int(url.rsplit(":", 1)[1])
            # A blocking socket: all is written and the socket closed before the server reads.
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                sock.sendall(b"".join(parts))
            await trio.testing.wait_all_tasks_blocked(0.01)
            views = (started, ended)
            monkeypatch.undo()
            # The server still serves.
            async with open_h2_connection(url) as connection:
                with pytest.raises(Rejected) as refused:
                    await connection.websocket("/refuse")
                assert refused.value.status == 403
    assert views == (1, 1)
