"""The debug line per connection (``trio_bocaws.connections``): peer, path, close code,
who closed, duration; read from the log of a real server after real clients, and from
the terminal of ``python -m trio_bocaws --log-level debug``."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from trio_websocket import ConnectionClosed, ConnectionRejected

from trio_bocaws import App, AppConfig, RejectConnection, WebSocket, WebSocketState
from trio_bocaws._websocket import lifetime_of

from .conftest import Server, close_code, connect
from .h2_client import open_h2_connection
from .raw_client import HANDSHAKE, raw_connection
from .subprocesses import server_process
from .test_terminal import LOG_LINE, wait_for_line

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 10
LOGGER = "trio_bocaws.connections"
DURATION = r"after \d+\.\d\d s"


def chat_app(**options: Any) -> App:
    app = App(**options)

    @app.websocket_route("/chat/{room}")
    async def chat(ws: WebSocket, room: str) -> None:
        async for message in ws:
            if message == "bye":
                await ws.close(1000)
                return
            if message == "fail":
                raise RuntimeError("the view failed")
            await ws.send(message)

    @app.websocket_route("/private", authenticate=refuse_401)
    async def private(ws: WebSocket) -> None:  # pragma: no cover - never reached
        await ws.accept()

    @app.websocket_route("/legal")
    async def legal(ws: WebSocket) -> None:
        await ws.reject(451, body="not here")

    return app


def refuse_401(ws: WebSocket) -> None:
    raise RejectConnection(401, body="who are you?")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


async def until_idle(app: App) -> None:
    # The App logs a connection's line in the same step in which app.connections drops.
    while app.connections:  # noqa: ASYNC110 (the callers' fail_after bounds it)
        await trio.sleep(0.01)


def metered(**options: Any) -> App:
    return chat_app(metrics=MeterProvider(metric_readers=[InMemoryMetricReader()]), **options)


@pytest.mark.parametrize("make_app", [chat_app, metered], ids=["plain", "with metrics"])
async def test_the_client_closes_with_4001(
    serve: Serve, caplog: pytest.LogCaptureFixture, make_app: Callable[[], App]
) -> None:
    app = make_app()
    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, logger="trio_bocaws"):
        async with connect(f"{server.url}/chat/lobby") as client:
            port = client.local.port
            await client.send_message("hi")
            assert await client.get_message() == "hi"
            await client.aclose(4001, "going")
        await until_idle(app)
    [line] = lines(caplog)
    assert re.fullmatch(rf"127\.0\.0\.1:{port} /chat/lobby closed 4001 by client {DURATION}", line)
    [record] = [record for record in caplog.records if record.name == LOGGER]
    assert record.levelno == logging.DEBUG


@pytest.mark.parametrize(
    ("said", "code"), [("bye", 1000), ("fail", 1011)], ids=["view closes", "view raises"]
)
async def test_the_server_closes_and_still_serves(
    serve: Serve, caplog: pytest.LogCaptureFixture, said: str, code: int
) -> None:
    app = chat_app()
    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, logger="trio_bocaws"):
        async with connect(f"{server.url}/chat/lobby") as client:
            port = client.local.port
            await client.send_message(said)
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
            assert close_code(closed) == code
        await until_idle(app)
        [line] = lines(caplog)
        assert re.fullmatch(
            rf"127\.0\.0\.1:{port} /chat/lobby closed {code} by server {DURATION}", line
        )
        async with connect(f"{server.url}/chat/other") as client:
            await client.send_message("again")
            assert await client.get_message() == "again"


async def test_the_server_s_shutdown_closes_with_1001(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = chat_app()
    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, logger="trio_bocaws"):
        async with connect(f"{server.url}/chat/lobby") as client:
            port = client.local.port
            await client.send_message("hi")
            assert await client.get_message() == "hi"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.shutdown)
                with pytest.raises(ConnectionClosed) as closed:
                    await client.get_message()
            assert close_code(closed) == 1001
    [line] = lines(caplog)
    assert re.fullmatch(rf"127\.0\.0\.1:{port} /chat/lobby closed 1001 by server {DURATION}", line)


async def test_refused_handshakes_say_their_status_and_cause(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = chat_app(config=AppConfig(allowed_origins=["https://chat.example"]))
    server = await serve(app)
    evil = [(b"origin", b"https://evil.example")]
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, logger="trio_bocaws"):
        for path, headers, status in [
            ("/chat/lobby", evil, 403),
            ("/private", None, 401),
            ("/legal", None, 451),
            ("/nowhere", None, 403),
        ]:
            with pytest.raises(ConnectionRejected) as rejected:
                async with connect(f"{server.url}{path}", extra_headers=headers):
                    pass  # pragma: no cover - refused
            assert rejected.value.status_code == status
        await until_idle(app)
        origin, auth, view, route = lines(caplog)
        assert re.fullmatch(r"127\.0\.0\.1:\d+ /chat/lobby refused 403 \(origin\)", origin)
        assert re.fullmatch(rf"127\.0\.0\.1:\d+ /private refused 401 \(auth\) {DURATION}", auth)
        assert re.fullmatch(rf"127\.0\.0\.1:\d+ /legal refused 451 \(view\) {DURATION}", view)
        assert re.fullmatch(r"127\.0\.0\.1:\d+ /nowhere refused 403 \(no_route\)", route)
        async with connect(f"{server.url}/chat/lobby") as client:
            await client.send_message("still here")
            assert await client.get_message() == "still here"


async def test_a_dropped_tcp_connection_is_lost_1006(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = chat_app()
    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, logger="trio_bocaws"):
        stream = await raw_connection(server.url, "/chat/lobby")
        port = stream.socket.getsockname()[1]
        await stream.aclose()  # no close frame
        await until_idle(app)
    [line] = lines(caplog)
    assert re.fullmatch(
        rf"127\.0\.0\.1:{port} /chat/lobby closed 1006 by client \(connection lost\) {DURATION}",
        line,
    )


async def test_http2_streams_log_their_connection_s_peer(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = chat_app()
    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, logger="trio_bocaws"):
        async with open_h2_connection(server.url) as connection:
            port = connection._stream.socket.getsockname()[1]  # type: ignore[attr-defined]
            for room in ("a", "b"):
                ws = await connection.websocket(f"/chat/{room}")
                await ws.send("hi")
                assert await ws.receive() == "hi"
                assert await ws.close(4001) == (4001, "")
            await until_idle(app)
    a, b = lines(caplog)
    assert re.fullmatch(rf"127\.0\.0\.1:{port} /chat/a closed 4001 by client {DURATION}", a)
    assert re.fullmatch(rf"127\.0\.0\.1:{port} /chat/b closed 4001 by client {DURATION}", b)


async def test_nothing_is_kept_or_logged_at_info(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    records: list[object] = []

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        lifetime = lifetime_of(ws)
        assert lifetime is not None
        records.append(lifetime.record)
        async for message in ws:
            await ws.send(message)

    server = await serve(app)
    for level in (logging.INFO, logging.DEBUG):
        with trio.fail_after(TIMEOUT), caplog.at_level(level, logger="trio_bocaws"):
            async with connect(f"{server.url}/echo") as client:
                await client.send_message("hi")
                assert await client.get_message() == "hi"
            with pytest.raises(ConnectionRejected):
                async with connect(f"{server.url}/nowhere"):
                    pass  # pragma: no cover - refused
            await until_idle(app)
        if level == logging.INFO:
            assert lines(caplog) == []
    # At INFO the connection kept no record (no clock read, nothing counted per message).
    from trio_bocaws._connection_log import ConnectionRecord

    assert records[0] is None
    assert isinstance(records[1], ConnectionRecord)
    assert len(lines(caplog)) == 2


async def test_the_runner_logs_the_line_at_log_level_debug() -> None:
    command = ["trio_bocaws", "examples.echo:app", "--bind", "127.0.0.1:0", "--log-level", "debug"]
    async with server_process(command) as server:
        with trio.fail_after(TIMEOUT):
            async with connect(server.url + "/echo") as client:
                port = client.local.port
                await client.send_message("hi")
                assert await client.get_message() == "hi"
                await client.aclose(4001)
            line = await wait_for_line(server, f"127.0.0.1:{port} /echo closed")
    assert LOG_LINE.match(line), line
    expected = rf"\[DEBUG\] 127\.0\.0\.1:{port} /echo closed 4001 by client {DURATION}$"
    assert re.search(expected, line), line


async def test_a_client_that_leaves_before_the_answer(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    view_started = trio.Event()

    @app.websocket_route("/slow")
    async def slow(ws: WebSocket) -> None:
        view_started.set()
        # The client leaves meanwhile; the view answers once the server has seen it go.
        while ws.state is not WebSocketState.DISCONNECTED:  # noqa: ASYNC110
            await trio.sleep(0.01)
        await ws.accept()

    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, logger="trio_bocaws"):
        host, port = server.url.removeprefix("ws://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(HANDSHAKE.replace(b"{path}", b"/slow"))
        client_port = stream.socket.getsockname()[1]
        await view_started.wait()
        await stream.aclose()
        await until_idle(app)
    [line] = lines(caplog)
    assert re.fullmatch(
        rf"127\.0\.0\.1:{client_port} /slow left before the handshake was answered {DURATION}",
        line,
    )
