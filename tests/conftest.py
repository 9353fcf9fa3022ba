from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio_websocket

from trio_bocaws import WebSocket, hypercorn_fixes
from trio_bocaws.testing import Server, start_server
from trio_bocaws.testing import open_websocket as connect

__all__ = ["Server", "close_code", "close_of", "connect", "websocket_app"]

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


@pytest.fixture
async def serve(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start apps on hypercorn's trio worker at 127.0.0.1:0; each gives its ws:// URL."""
    servers: list[Server] = []

    async def start(app: ASGIApp, **hypercorn_options: Any) -> Server:
        server = await start_server(nursery, app, **hypercorn_options)
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
