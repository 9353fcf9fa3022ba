from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio_websocket

from trio_bocaws import WebSocket, WebSocketDisconnect, hypercorn_fixes
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


# -- Raw WebSocket bytes, for what a real client library will not send ------------------

HANDSHAKE = (
    b"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def recording_handler() -> tuple[list[int], trio.Event, Callable[[WebSocket], Awaitable[None]]]:
    """A handler that accepts, waits for the client to go, and records the close code it
    was told; and the list it records to, and an event set when it has."""
    seen: list[int] = []
    done = trio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
        done.set()

    return seen, done, handler


async def raw_connection(url: str, path: str = "/echo") -> trio.SocketStream:
    """A TCP stream to the server of ``url``, past a WebSocket handshake to ``path``."""
    stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
    await stream.send_all(HANDSHAKE.replace(b"{path}", path.encode()))
    response = b""
    while b"\r\n\r\n" not in response:
        response += await stream.receive_some()
    assert response.startswith(b"HTTP/1.1 101")
    return stream


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask; an all-zero mask keeps the payload readable)."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 2**16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


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
