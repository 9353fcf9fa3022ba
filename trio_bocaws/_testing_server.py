"""A real server for tests: hypercorn's trio worker on ``127.0.0.1:0`` (:func:`serving`,
:func:`start_server`) and a trio-websocket client that always closes its stream
(:func:`open_websocket`)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from ._testing_lifespan import ASGIApp

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup


@attrs.define
class Server:
    """A hypercorn trio server started by :func:`serving`."""

    url: str
    """``ws://127.0.0.1:PORT`` (add the path)."""
    _stop: trio.Event
    _done: trio.Event

    async def shutdown(self) -> None:
        """Stop it as SIGTERM would (open WebSockets close with 1001) and wait for it."""
        self._stop.set()
        await self._done.wait()


async def start_server(nursery: trio.Nursery, app: ASGIApp, **hypercorn_options: Any) -> Server:
    """Start ``app`` on hypercorn's trio worker at ``127.0.0.1:0``, in ``nursery``, as
    :func:`trio_bocaws.serve` runs it.

    With :mod:`trio_bocaws.hypercorn_fixes` uninstalled, hypercorn runs as it is.
    Keyword arguments set attributes of ``hypercorn.config.Config`` (``graceful_timeout``,
    ``websocket_max_message_size``, ...). Stop it with :meth:`Server.shutdown`: cancelling
    hypercorn outright leaves its connection sockets unclosed.
    """
    import hypercorn.config
    import hypercorn.trio

    from ._hypercorn import installed
    from ._hypercorn._worker import WorkerOptions, serve_app

    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2.0
    for name, value in hypercorn_options.items():
        if not hasattr(config, name):
            raise TypeError(f"hypercorn's Config has no option {name!r}")
        setattr(config, name, value)
    stop, done = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            if installed():
                # The same worker as trio_bocaws.serve's: shutdown notice, write timeout.
                await serve_app(
                    app,
                    config,
                    WorkerOptions(),
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                )
            else:  # hypercorn as it is, for tests of what trio_bocaws does without it
                await hypercorn.trio.serve(
                    app, config, shutdown_trigger=stop.wait, task_status=task_status
                )
        finally:
            done.set()

    binds = await nursery.start(run)
    return Server(binds[0].replace("http://", "ws://", 1), stop, done)


@asynccontextmanager
async def serving(app: ASGIApp, **hypercorn_options: Any) -> AsyncIterator[Server]:
    """Run ``app`` on hypercorn's trio worker at ``127.0.0.1:0`` for the block.

    Options as for :func:`start_server`. On exit the server shuts down gracefully.
    """
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, app, **hypercorn_options)
        try:
            yield server
        finally:
            with trio.move_on_after(10, shield=True):
                await server.shutdown()


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = 2**20,
) -> AsyncIterator[Any]:
    """A trio-websocket client connection whose TCP stream is always closed.

    ``trio_websocket.open_websocket_url`` leaves its socket open when the server closes
    first or refuses the handshake (trio-websocket 0.12); under ``filterwarnings = error``
    the unclosed socket then fails whichever test runs next. Here the stream is closed
    whatever happens. Errors are trio-websocket's own (``ConnectionRejected``,
    ``ConnectionClosed``), unwrapped from exception groups.
    """
    import trio_websocket

    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"open_websocket needs ws://HOST:PORT/..., not {url!r}")
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    from wsproto.utilities import LocalProtocolError

    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    closing = False
    try:
        try:
            async with trio.open_nursery() as nursery:
                connection = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,
                    parts.netloc,
                    resource,
                    subprotocols=list(subprotocols) if subprotocols else None,
                    extra_headers=extra_headers,
                    max_message_size=max_message_size,
                )
                try:
                    yield connection
                finally:
                    closing = True
                    with trio.move_on_after(2, shield=True):
                        await connection.aclose()
        except BaseExceptionGroup as group:
            if closing:
                # trio-websocket 0.12 answers a ping that arrives after its own close
                # frame; wsproto refuses, and its reader task fails. The connection was
                # ending anyway: that failure is not the test's business.
                _, rest = group.split(LocalProtocolError)
                if rest is None:
                    return
                group = rest
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise group from None
    finally:
        await stream.aclose()
