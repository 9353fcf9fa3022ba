from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import hypercorn.config
import hypercorn.trio
import pytest
import trio
import trio_websocket

from trio_bocaws import WebSocket, hypercorn_fixes

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

Handler = Callable[[WebSocket], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


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


def close_of(
    info: pytest.ExceptionInfo[trio_websocket.ConnectionClosed],
) -> tuple[int, str]:
    """The close code and reason a trio-websocket client saw (no reason is "")."""
    reason = info.value.reason
    assert reason is not None
    return reason.code, reason.reason or ""


def close_code(info: pytest.ExceptionInfo[trio_websocket.ConnectionClosed]) -> int:
    """The close code a trio-websocket client saw."""
    return close_of(info)[0]


@attrs.define
class Server:
    """A real hypercorn trio server running in the test's nursery."""

    url: str
    _stop: trio.Event
    _done: trio.Event

    async def shutdown(self) -> None:
        """Ask the server to stop, as SIGTERM would, and wait until it has."""
        self._stop.set()
        await self._done.wait()


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
    """Start ``app`` on hypercorn's trio worker at 127.0.0.1:0; return its ws:// URL."""
    servers: list[Server] = []

    async def start(app: ASGIApp, **config_options: Any) -> Server:
        config = hypercorn.config.Config()
        config.bind = ["127.0.0.1:0"]
        config.graceful_timeout = 2.0
        for name, value in config_options.items():
            setattr(config, name, value)
        stop, done = trio.Event(), trio.Event()

        async def run(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await hypercorn.trio.serve(
                    app, config, shutdown_trigger=stop.wait, task_status=task_status
                )
            finally:
                done.set()

        binds = await nursery.start(run)
        server = Server(binds[0].replace("http://", "ws://", 1), stop, done)
        servers.append(server)
        return server

    yield start
    # Stop each server the way SIGTERM would and wait for it: cancelling hypercorn outright
    # (as the nursery fixture would) leaves its connection sockets unclosed.
    with trio.fail_after(10):
        for server in servers:
            await server.shutdown()


@asynccontextmanager
async def connect(
    url: str,
    *,
    subprotocols: list[str] | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = 2**20,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client connection whose TCP stream is always closed.

    ``open_websocket_url`` leaves its socket open when the server closes first or rejects
    the handshake (trio-websocket 0.12: ``aclose()`` returns early once a close reason is
    set); with warnings as errors the unclosed socket would fail whichever test runs next.
    Here the test owns the stream.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        try:
            async with trio.open_nursery() as nursery:
                connection = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,
                    parts.netloc,
                    resource,
                    subprotocols=subprotocols,
                    extra_headers=extra_headers,
                    max_message_size=max_message_size,
                )
                try:
                    yield connection
                finally:
                    with trio.move_on_after(2, shield=True):
                        await connection.aclose()
        except BaseExceptionGroup as group:
            # Let tests see the client's own error, as open_websocket_url would.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        await stream.aclose()
