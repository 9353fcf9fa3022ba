from __future__ import annotations

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
