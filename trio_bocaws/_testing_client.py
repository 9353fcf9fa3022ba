"""The in-process test client: :class:`TestClient` runs an ASGI app's WebSocket routes in
the test's own Trio run, as hypercorn's trio worker would (see :mod:`trio_bocaws.testing`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, NoReturn
from urllib.parse import unquote, urlsplit

import trio

from ._testing_lifespan import ASGIApp, Lifespan
from ._testing_session import WebSocketSession

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

# Named after the public module, where users find the client.
logger = logging.getLogger("trio_bocaws.testing")

HeaderPairs = Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str]

DEFAULT_TIMEOUT: Final = 5.0


def _header_pairs(headers: HeaderPairs | None) -> list[tuple[bytes, bytes]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [
        (
            (name.encode("latin-1") if isinstance(name, str) else name).lower(),
            value.encode("latin-1") if isinstance(value, str) else value,
        )
        for name, value in items
    ]


class TestClient:
    """An in-process client for an ASGI app's WebSocket routes.

    Args:
        app: The ASGI app.
        timeout: Seconds each call may take by default (the handshake, every receive and
            send); each call also takes its own ``timeout=``.
        raise_app_exceptions: Re-raise, when a connection's ``async with`` ends, an
            exception the app let escape (a :class:`~trio_bocaws.App` logs its views'
            errors instead, as under a real server). The client still sees what
            hypercorn would show: 1011, or HTTP 500 before accept.

    ``async with TestClient(app)`` also runs the app's lifespan: startup on entry (an app
    that fails to start raises ``RuntimeError``), then, on exit, the server-shutdown notice
    (open WebSockets close with 1001) and the lifespan shutdown.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        raise_app_exceptions: bool = True,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        server: tuple[str, int] = ("testserver", 80),
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.raise_app_exceptions = raise_app_exceptions
        self._client = client
        self._server = server
        self._state: dict[str, Any] = {}
        self._lifespan: Lifespan | None = None

    async def __aenter__(self) -> TestClient:
        self._state = {}
        self._lifespan = Lifespan(self.app, self._state, self.timeout)
        await self._lifespan.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            await lifespan.stop()  # noqa: ASYNC102 (bounded and shielded inside)

    def __enter__(self) -> NoReturn:
        raise TypeError(_ASYNC_WITH_CLIENT)

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ raised
        pass

    def begin_shutdown(self) -> None:
        """Do what a server does when told to stop: every open WebSocket inside
        ``async with ws`` (every App view) is cancelled and closes with its shutdown code
        (1001). Inside ``async with TestClient(app)`` only; leaving the block does it too,
        then runs the lifespan shutdown."""
        if self._lifespan is None:
            raise RuntimeError("begin_shutdown() needs `async with TestClient(app)`")
        self._lifespan.begin_shutdown()

    def _scope(
        self,
        path: str,
        headers: list[tuple[bytes, bytes]],
        subprotocols: Sequence[str],
    ) -> dict[str, Any]:
        parts = urlsplit(path)
        raw_path = parts.path or "/"
        host = self._server[0].encode("latin-1")
        base_headers = [
            (b"host", host),
            (b"connection", b"upgrade"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ]
        if subprotocols:
            base_headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        given = {name for name, _ in headers}
        return {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": parts.query.encode("latin-1"),
            "root_path": "",
            "headers": [pair for pair in base_headers if pair[0] not in given] + headers,
            "client": self._client,
            "server": self._server,
            "subprotocols": list(subprotocols),
            "extensions": {"websocket.http.response": {}},
            "state": dict(self._state),
        }

    def websocket_connect(
        self,
        path: str,
        *,
        headers: HeaderPairs | None = None,
        subprotocols: Sequence[str] = (),
        timeout: float | None = None,
    ) -> AbstractAsyncContextManager[WebSocketSession]:
        """Open a WebSocket to ``path`` (with its query string, if any), for an
        ``async with`` block: ``async with client.websocket_connect("/echo") as ws:``.

        Raises:
            HandshakeRejected: The app refused the handshake.
            trio.TooSlowError: The app did not answer the handshake within the timeout.
            TypeError: Used with ``await`` or ``with`` instead of ``async with``.
        """
        return _Connecting(
            self._websocket_connect(
                path, headers=headers, subprotocols=subprotocols, timeout=timeout
            )
        )

    @asynccontextmanager
    async def _websocket_connect(
        self,
        path: str,
        *,
        headers: HeaderPairs | None,
        subprotocols: Sequence[str],
        timeout: float | None,
    ) -> AsyncIterator[WebSocketSession]:
        limit = self.timeout if timeout is None else timeout
        session = WebSocketSession(subprotocols, self.timeout)
        scope = self._scope(path, _header_pairs(headers), subprotocols)
        failure: list[Exception] = []
        app_done = trio.Event()

        async def run_app() -> None:
            try:
                await self.app(scope, session._app_receive, session._app_send)
            except Exception as exc:
                logger.error("the ASGI app raised", exc_info=exc)
                failure.append(exc)
            finally:
                session._app_finished()
                app_done.set()

        try:
            async with trio.open_nursery() as nursery:
                session._to_app.send_nowait({"type": "websocket.connect"})
                nursery.start_soon(run_app)
                try:
                    with trio.fail_after(limit):
                        await session._answered.wait()
                except trio.TooSlowError:
                    nursery.cancel_scope.cancel()
                    raise trio.TooSlowError(
                        f"the app did not answer the handshake for {path!r} within {limit}s"
                    ) from None
                if session._rejection is None:
                    try:
                        yield session
                    finally:
                        with trio.move_on_after(limit, shield=True):
                            await session.close()
                            await app_done.wait()  # as a server lets the app finish
                # Whatever is left (an app that ignores the close) is cancelled.
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The test's own exception, or ours, rather than a group around it.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        if failure and self.raise_app_exceptions:
            raise failure[0]
        if session._rejection is not None:
            raise session._rejection


_ASYNC_WITH_CLIENT: Final = (
    "TestClient runs the app's lifespan in the test's Trio run: use "
    "`async with TestClient(app) as client:`, not `with`"
)
_ASYNC_WITH_CONNECT: Final = (
    "websocket_connect() opens a connection for a block: use "
    "`async with client.websocket_connect(path) as ws:`"
)


class _Connecting:
    """What :meth:`TestClient.websocket_connect` returns: an async context manager that
    says how to use it when it is awaited or used with a plain ``with``."""

    __slots__ = ("_manager",)

    def __init__(self, manager: AbstractAsyncContextManager[WebSocketSession]) -> None:
        self._manager = manager

    async def __aenter__(self) -> WebSocketSession:
        return await self._manager.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        # The connection's own exit bounds and shields its cleanup.
        return await self._manager.__aexit__(*exc_info)  # noqa: ASYNC102

    def __await__(self) -> Generator[Any, None, NoReturn]:
        raise TypeError(_ASYNC_WITH_CONNECT)

    def __enter__(self) -> NoReturn:
        raise TypeError(_ASYNC_WITH_CONNECT)

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ raised
        pass
