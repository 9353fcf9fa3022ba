"""Metrics: the OpenTelemetry instruments of an App, read with the SDK's in-memory reader
against a real server and real clients; and the app without OpenTelemetry at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from trio_websocket import ConnectionClosed, ConnectionRejected

from trio_bocaws import (
    App,
    AppConfig,
    Broadcast,
    BroadcastConfig,
    RejectConnection,
    WebSocket,
)
from trio_bocaws.testing import ConnectionClosed as ConnectionClosedInMemory
from trio_bocaws.testing import TestClient

from .conftest import Server, connect

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 10

Key = tuple[str, frozenset[tuple[str, Any]]]


def metered_app(**options: Any) -> tuple[App, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    app = App(metrics=MeterProvider(metric_readers=[reader]), **options)
    return app, reader


def read(reader: InMemoryMetricReader) -> dict[Key, Any]:
    """Every data point: a sum's value, a histogram's (count, sum), by name and attributes."""
    points: dict[Key, Any] = {}
    data = reader.get_metrics_data()
    if data is None:
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    if isinstance(point, HistogramDataPoint):
                        points[key] = (point.count, point.sum)
                    elif isinstance(point, NumberDataPoint):
                        points[key] = point.value
    return points


def key(name: str, **attributes: Any) -> Key:
    return (name, frozenset(attributes.items()))


async def until_idle(app: App) -> None:
    # The App records a connection's end in the same step in which app.connections drops;
    # nothing to wait on but that count (the callers' fail_after bounds the loop).
    while app.connections:  # noqa: ASYNC110
        await trio.sleep(0.01)


async def test_connections_messages_and_how_they_closed(serve: Serve) -> None:
    app, reader = metered_app()

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    @app.websocket_route("/bye")
    async def bye(ws: WebSocket) -> None:
        await ws.send("bye")
        await ws.close(4001, "that was all")

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(f"{server.url}/echo") as client:
            for text in ["a", "b", "c"]:
                await client.send_message(text)
                assert await client.get_message() == text
            # Open: active, and nothing closed yet.
            assert read(reader)[key("trio_bocaws.connections.active", route="/echo")] == 1
            assert not any(name.endswith("closed") for name, _ in read(reader))
            await client.aclose(1000)
        async with connect(f"{server.url}/bye") as client:
            assert await client.get_message() == "bye"
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 4001
        await until_idle(app)
    points = read(reader)
    closed_name = "trio_bocaws.connections.closed"
    assert points[key(closed_name, route="/echo", close_code=1000, closed_by="client")] == 1
    assert points[key(closed_name, route="/bye", close_code=4001, closed_by="server")] == 1
    assert points[key("trio_bocaws.connections.active", route="/echo")] == 0
    assert points[key("trio_bocaws.connections.active", route="/bye")] == 0
    assert points[key("trio_bocaws.messages.received", route="/echo")] == 3
    assert points[key("trio_bocaws.messages.sent", route="/echo")] == 3
    assert points[key("trio_bocaws.messages.sent", route="/bye")] == 1
    assert key("trio_bocaws.messages.received", route="/bye") not in points
    count, total = points[key("trio_bocaws.connection.duration", route="/echo")]
    assert count == 1 and total > 0
    assert points[key("trio_bocaws.connection.duration", route="/bye")][0] == 1
    # The server still serves.
    with trio.fail_after(TIMEOUT):
        async with connect(f"{server.url}/echo") as client:
            await client.send_message("again")
            assert await client.get_message() == "again"


async def test_the_duration_is_the_connection_s_on_trio_s_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, reader = metered_app()

    @app.websocket_route("/slow")
    async def slow(ws: WebSocket) -> None:
        await ws.accept()
        await trio.sleep(90)
        await ws.close()

    async with TestClient(app) as client, client.websocket_connect("/slow") as ws:
        with pytest.raises(ConnectionClosedInMemory) as closed:
            await ws.receive(timeout=100)
        assert closed.value.code == 1000
    await trio.testing.wait_all_tasks_blocked()
    count, total = read(reader)[key("trio_bocaws.connection.duration", route="/slow")]
    assert (count, total) == (1, pytest.approx(90))


async def test_each_refusal_is_counted_with_its_reason(serve: Serve) -> None:
    def authenticate(ws: WebSocket) -> str:
        if ws.query_params.get("token") != "secret":
            raise RejectConnection(401, "log in first")
        return "ada"

    app, reader = metered_app(config=AppConfig(max_connections=2))
    held = trio.Event()

    @app.websocket_route("/feed", authenticate=None)
    async def feed(ws: WebSocket, since: int) -> None:
        await ws.send(str(since))
        await held.wait()

    @app.websocket_route("/private", authenticate=authenticate)
    async def private(ws: WebSocket) -> None:
        await ws.send(ws.user)

    @app.websocket_route("/picky", authenticate=None)
    async def picky(ws: WebSocket) -> None:
        await ws.reject(429, body="slow down")

    async def refused(path: str, **options: Any) -> int:
        with pytest.raises(ConnectionRejected) as info:
            async with connect(server.url + path, **options):
                pass  # pragma: no cover
        return info.value.status_code

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        evil = [(b"origin", b"https://evil.example")]
        assert await refused("/feed?since=1", extra_headers=evil) == 403
        assert await refused("/nowhere") == 403
        assert await refused("/feed?since=yesterday") == 400
        assert await refused("/private") == 401
        assert await refused("/picky") == 429
        async with (
            connect(f"{server.url}/feed?since=1") as one,
            connect(f"{server.url}/feed?since=2") as two,
        ):
            assert [await one.get_message(), await two.get_message()] == ["1", "2"]
            assert await refused("/feed?since=3") == 503
            held.set()
        async with connect(f"{server.url}/private?token=secret") as client:
            assert await client.get_message() == "ada"
    points = read(reader)
    refused_name = "trio_bocaws.handshakes.refused"
    for reason in ["origin", "no_route", "bad_parameters", "auth", "view", "cap"]:
        assert points[key(refused_name, reason=reason)] == 1, reason
    # A refused handshake never counts as a closed connection.
    assert not any(
        name == "trio_bocaws.connections.closed"
        and ("route", "/private") in attributes
        and ("closed_by", "server") not in attributes
        for name, attributes in points
    )


async def test_a_room_s_dropped_messages(serve: Serve) -> None:
    hub = Broadcast(config=BroadcastConfig(buffer_size=1))
    app, reader = metered_app(broadcast=hub)
    published = trio.Event()
    count = 100
    big = "x" * (512 * 1024)

    @app.websocket_route("/room")
    async def member(ws: WebSocket) -> None:
        room = app.broadcast.room("lobby")
        await room.join(ws)
        # The client reads nothing until all are published: the member's forwarder stalls
        # once the sockets' buffers are full, and its buffer of one drops the oldest. The
        # last message, the newest, is never dropped.
        for number in range(count - 1):
            await room.send_text(f"{number} {big}")
        await room.send_text("end")
        published.set()
        async for _ in ws:
            pass

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(f"{server.url}/room", max_message_size=2**20) as client:
            await published.wait()
            received = 0
            while True:
                received += 1
                if await client.get_message() == "end":
                    break
            dropped = read(reader)[key("trio_bocaws.room.messages.dropped", room="lobby")]
            # Each message was either forwarded or dropped, and the metric says which.
            assert dropped == count - received
            assert dropped > 0, received


def test_without_opentelemetry_nothing_is_imported() -> None:
    """With OpenTelemetry unimportable, an App serves as before; metrics=True says what
    to install."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # an import of it raises ImportError
        import trio
        from trio_bocaws import App, WebSocket
        from trio_bocaws.testing import TestClient

        app = App()

        @app.websocket_route("/echo")
        async def echo(ws: WebSocket) -> None:
            async for message in ws:
                await ws.send(message)

        async def main() -> None:
            async with TestClient(app) as client, client.websocket_connect("/echo") as ws:
                await ws.send_text("hi")
                assert await ws.receive_text() == "hi"

        trio.run(main)
        assert [name for name in sys.modules if name.startswith("opentelemetry.")] == []
        try:
            App(metrics=True)
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "App(metrics=True): metrics need OpenTelemetry's API: pip install 'trio-bocaws[metrics]'"
    )


def test_metrics_takes_a_bool_or_a_meter_provider() -> None:
    with pytest.raises(TypeError, match="MeterProvider, not str"):
        App(metrics="prometheus")
