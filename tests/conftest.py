from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio_websocket

from trio_bocaws import App, WebSocket, WebSocketDisconnect, hypercorn_fixes
from trio_bocaws.testing import Server, start_server
from trio_bocaws.testing import open_websocket as connect

__all__ = ["Server", "client_reason", "close_code", "close_of", "connect", "websocket_app"]

# The server the `serve` fixture starts: "hypercorn" (its trio worker with trio_bocaws's
# adapter, the default) or "anycorn" (anycorn's serve on Trio, without the adapter: `nox -s
# anycorn`). Read here only.
TEST_SERVER = os.environ.get("TRIO_BOCAWS_TEST_SERVER", "hypercorn")
if TEST_SERVER not in ("hypercorn", "anycorn"):
    raise pytest.UsageError(
        f"TRIO_BOCAWS_TEST_SERVER={TEST_SERVER!r}: use 'hypercorn' or 'anycorn'"
    )

Handler = Callable[[WebSocket], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]
ClosedInfo = pytest.ExceptionInfo[trio_websocket.ConnectionClosed]


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


def websocket_app(handler: Handler, **options: Any) -> ASGIApp:
    """A bare ASGI app that wraps each connection in a WebSocket and runs ``handler``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await handler(WebSocket(scope, receive, send, **options))

    return app


def client_reason(reason: str) -> str:
    """A client's close reason as the app sees it on the test server: anycorn's
    ``websocket.disconnect`` event carries the code only (the adapter adds the reason)."""
    return reason if TEST_SERVER == "hypercorn" else ""


def close_of(info: ClosedInfo) -> tuple[int, str]:
    """The close code and reason a trio-websocket client saw (no reason is "")."""
    reason = info.value.reason
    assert reason is not None
    return reason.code, reason.reason or ""


def close_code(info: ClosedInfo) -> int:
    """The close code a trio-websocket client saw."""
    return close_of(info)[0]


@pytest.fixture
def without_hypercorn_fixes() -> Iterator[None]:
    """hypercorn as it is, for the length of a test."""
    hypercorn_fixes.uninstall()
    try:
        yield
    finally:
        assert hypercorn_fixes.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if TEST_SERVER == "hypercorn":
        return
    for item in items:
        if "without_hypercorn_fixes" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason="tests hypercorn as it is, not anycorn"))
        marker = item.get_closest_marker("needs_hypercorn_adapter")
        if marker is not None:
            # Strict: a test that passes without the adapter loses its marker.
            why = marker.args[0] if marker.args else "needs trio_bocaws's hypercorn adapter"
            item.add_marker(pytest.mark.xfail(reason=f"on {TEST_SERVER}: {why}", strict=True))


async def start_anycorn(nursery: trio.Nursery, app: ASGIApp, **options: Any) -> Server:
    """Start ``app`` with anycorn's serve (on Trio, through AnyIO) at 127.0.0.1:0.

    Options set attributes of ``anycorn.Config``, as for hypercorn's in
    :func:`~trio_bocaws.testing.start_server`.
    """
    import anycorn

    config = anycorn.Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2.0
    for name, value in options.items():
        if not hasattr(config, name):
            raise TypeError(f"anycorn's Config has no option {name!r}")
        setattr(config, name, value)
    stop, done = trio.Event(), trio.Event()

    # (Trio's task status, which AnyIO takes on the Trio backend: typed Any for that.)
    async def run(task_status: Any) -> None:
        try:
            await anycorn.serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
        finally:
            done.set()

    binds = await nursery.start(run)
    return Server(binds[0].replace("http://", "ws://", 1), stop, done)


@pytest.fixture
async def serve(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start apps at 127.0.0.1:0 on the test server (hypercorn's trio worker unless
    ``TRIO_BOCAWS_TEST_SERVER`` says otherwise); each gives its ws:// URL."""
    servers: list[Server] = []
    starter = start_anycorn if TEST_SERVER == "anycorn" else start_server

    async def start(app: ASGIApp, **hypercorn_options: Any) -> Server:
        server = await starter(nursery, app, **hypercorn_options)
        servers.append(server)
        return server

    yield start
    with trio.fail_after(10):
        for server in servers:
            await server.shutdown()


# -- Apps and handlers more than one test file uses ------------------------------------


def echo_app() -> App:
    """An App whose route ``/echo`` sends every message back."""
    app = App()

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    return app


def waiting_app(count: int) -> tuple[App, trio.Event, list[str]]:
    """An App whose route ``/wait`` accepts and waits for a message; the event is set once
    ``count`` connections wait there, and the list gets ``"cancelled"`` for each view that
    was cancelled (as a server's shutdown does)."""
    waiting = 0
    all_waiting = trio.Event()
    cancelled: list[str] = []
    app = App()

    @app.websocket_route("/wait")
    async def wait(ws: WebSocket) -> None:
        nonlocal waiting
        await ws.accept()
        waiting += 1
        if waiting == count:
            all_waiting.set()
        try:
            await ws.receive_text()
        except trio.Cancelled:
            cancelled.append("cancelled")
            raise

    return app, all_waiting, cancelled


def recording_handler(
    reasons: list[str] | None = None,
) -> tuple[list[int], trio.Event, Handler]:
    """A handler that accepts, waits for the client to go, and records the close code it
    was told (and its reason in ``reasons``, if given); and the list it records to, and an
    event set when it has."""
    seen: list[int] = []
    done = trio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
            if reasons is not None:
                reasons.append(exc.reason)
        done.set()

    return seen, done, handler


Burst = Callable[[int, int], str] | Callable[[int, int], bytes]


async def send_from_tasks(ws: WebSocket, senders: int, each: int, message: Burst) -> None:
    """``senders`` tasks send on ``ws`` at once, ``each`` messages each, in order:
    ``message(task, index)``, text or bytes, which starts with ``"{task}:{index}:"``."""

    async def send_all(task: int) -> None:
        for index in range(each):
            data = message(task, index)
            if isinstance(data, str):
                await ws.send_text(data)
            else:
                await ws.send_bytes(data)

    async with trio.open_nursery() as nursery:
        for task in range(senders):
            nursery.start_soon(send_all, task)


async def receive_from_tasks(
    receive: Callable[[], Awaitable[str | bytes]], senders: int, each: int, message: Burst
) -> dict[int, list[int]]:
    """What a client receives of :func:`send_from_tasks`, each message checked whole (and
    of the type sent): the indexes of each task's messages, in the order they came."""
    received: dict[int, list[int]] = {task: [] for task in range(senders)}
    for _ in range(senders * each):
        data = await receive()
        prefix = data[:40].decode("ascii", "replace") if isinstance(data, bytes) else data
        task, index, _ = prefix.split(":", 2)
        assert data == message(int(task), int(index))
        received[int(task)].append(int(index))
    return received


async def assert_certificate_refused(url: str) -> None:
    """A TLS client with the system's default trust fails to verify the server of ``url``.

    (trio-websocket 0.12 hangs on a failed verification, so a bare TLS stream shows it.)
    """
    port = int(url.rsplit(":", 1)[1])
    untrusting = ssl.create_default_context()
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=untrusting)
    with pytest.raises(trio.BrokenResourceError) as failed:
        await stream.do_handshake()
    assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
    await stream.aclose()
