"""Testing WebSocket apps: an in-process client, and helpers for a real server.

:class:`TestClient` runs an ASGI app in the test's own Trio run, with no network and no
threads, and answers like hypercorn's trio worker where a test would notice: a close before
``accept`` is a refused handshake (HTTP 403), a ``websocket.http.response`` denial arrives
with its status, headers and body, the client's close code reaches the app, and an app that
returns without closing gives 1011 after ``accept`` (HTTP 500 before). Every call has a
timeout, so a test never hangs.

::

    from trio_bocaws.testing import TestClient

    async def test_echo():
        async with TestClient(app) as client:  # runs the app's lifespan
            async with client.websocket_connect("/echo") as ws:
                await ws.send_text("hi")
                assert await ws.receive_text() == "hi"

For tests against a real server, :func:`serving` runs hypercorn's trio worker on
``127.0.0.1:0`` and :func:`open_websocket` connects trio-websocket to it. The pytest plugin
(installed with trio_bocaws) wraps both in fixtures: see :mod:`trio_bocaws_pytest`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, NoReturn
from urllib.parse import unquote, urlsplit

import attrs
import trio

from ._errors import leaves
from ._shutdown import STATE_KEY, ServerShutdown

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "ConnectionClosed",
    "HandshakeRejected",
    "Server",
    "TestClient",
    "WebSocketSession",
    "open_websocket",
    "serving",
    "start_server",
]

logger = logging.getLogger("trio_bocaws.testing")

ASGIApp = Callable[..., Awaitable[None]]
HeaderPairs = Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str]

DEFAULT_TIMEOUT: Final = 5.0
# hypercorn's max_app_queue_size: how many events wait for the app's receive().
_APP_QUEUE_SIZE: Final = 10


class HandshakeRejected(Exception):
    """The app refused the handshake: what an HTTP client would have received.

    Attributes:
        status: The HTTP status (403 for a close before accept, 500 when the app ended
            without answering).
        headers: Response headers, as ``(name, value)`` byte pairs.
        body: The response body.
    """

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(status, headers, body)
        self.status = status
        self.headers = headers
        self.body = body

    def __str__(self) -> str:
        return f"handshake refused with HTTP {self.status}" + (
            f": {self.body.decode('utf-8', 'replace')}" if self.body else ""
        )


class ConnectionClosed(Exception):
    """The app closed the connection (or it ended); raised by the session's receive and
    send methods.

    Attributes:
        code: The close code the app sent (1011 if it returned without closing).
        reason: The close reason.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"connection closed by the app with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


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


class WebSocketSession:
    """The client's end of one WebSocket connection made by :class:`TestClient`."""

    def __init__(self, offered: Sequence[str], timeout: float) -> None:
        self._offered = list(offered)
        self._timeout = timeout
        self._to_app, self._app_inbox = trio.open_memory_channel[dict[str, Any]](_APP_QUEUE_SIZE)
        self._from_app, self._inbox = trio.open_memory_channel[dict[str, Any]](math.inf)
        self._answered = trio.Event()
        self._accepted = False
        self._rejection: HandshakeRejected | None = None
        self._response_start: dict[str, Any] | None = None
        self._response_body = bytearray()
        self._server_close: tuple[int, str] | None = None
        self._client_closed = False
        self.subprotocol: str | None = None
        """The subprotocol the app accepted."""
        self.accept_headers: list[tuple[bytes, bytes]] = []
        """Extra headers the app sent with its accept."""

    # -- The ASGI side: what the app calls ------------------------------------------------

    async def _app_receive(self) -> dict[str, Any]:
        return await self._app_inbox.receive()

    async def _app_send(self, message: Any) -> None:
        await trio.lowlevel.checkpoint()
        if self._server_close is not None or self._rejection is not None or self._client_closed:
            return  # as hypercorn does once the stream is closed
        kind = message["type"]
        if not self._answered.is_set():
            self._handshake_message(kind, message)
        elif kind == "websocket.send":
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("websocket.send needs exactly one of 'text' and 'bytes'")
            self._from_app.send_nowait({"text": text, "bytes": data})
        elif kind == "websocket.close":
            self._server_close = (int(message.get("code", 1000)), message.get("reason") or "")
            self._from_app.close()
            # The server answers the client's echo of the close with a disconnect: 1000.
            self._to_app.send_nowait({"type": "websocket.disconnect", "code": 1000})
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after the handshake")

    def _handshake_message(self, kind: str, message: Mapping[str, Any]) -> None:
        if kind == "websocket.accept":
            subprotocol = message.get("subprotocol")
            if subprotocol is not None and subprotocol not in self._offered:
                # hypercorn crashes the whole server on this.
                raise RuntimeError(f"the app accepted subprotocol {subprotocol!r}, not offered")
            self._accepted = True
            self.subprotocol = subprotocol
            self.accept_headers = list(message.get("headers") or [])
            self._answered.set()
        elif kind == "websocket.close":
            self._reject(403, [], b"")  # hypercorn drops the code and reason
        elif kind == "websocket.http.response.start":
            self._response_start = dict(message)
        elif kind == "websocket.http.response.body" and self._response_start is not None:
            self._response_body += message.get("body", b"")
            if not message.get("more_body", False):
                start = self._response_start
                self._reject(
                    int(start["status"]),
                    list(start.get("headers") or []),
                    bytes(self._response_body),
                )
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} during the handshake")

    def _reject(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self._rejection = HandshakeRejected(status, headers, body)
        self._answered.set()

    def _app_finished(self) -> None:
        """The app returned (or raised): answer as hypercorn would for what it left open."""
        if not self._answered.is_set():
            self._reject(500, [], b"")
        elif self._accepted and self._server_close is None and not self._client_closed:
            self._server_close = (1011, "")
            self._from_app.close()
        elif self._server_close is None:
            self._from_app.close()

    # -- The test's side ------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else timeout

    async def _next(self, timeout: float | None) -> dict[str, Any]:
        limit = self._deadline(timeout)
        try:
            with trio.fail_after(limit):
                return await self._inbox.receive()
        except trio.EndOfChannel:
            code, reason = self._server_close or (1006, "")
            raise ConnectionClosed(code, reason) from None
        except trio.TooSlowError:
            raise trio.TooSlowError(f"no message from the app within {limit}s") from None

    async def receive(self, *, timeout: float | None = None) -> str | bytes:
        """The next message the app sent, text or bytes.

        Raises:
            ConnectionClosed: The app closed the connection.
            trio.TooSlowError: Nothing arrived within the timeout.
        """
        message = await self._next(timeout)
        payload: str | bytes = message["text"] if message["text"] is not None else message["bytes"]
        return payload

    async def receive_text(self, *, timeout: float | None = None) -> str:
        """The next message, which must be text."""
        message = await self._next(timeout)
        if message["text"] is None:
            raise TypeError(f"expected a text message, the app sent bytes: {message['bytes']!r}")
        text: str = message["text"]
        return text

    async def receive_bytes(self, *, timeout: float | None = None) -> bytes:
        """The next message, which must be binary."""
        message = await self._next(timeout)
        if message["bytes"] is None:
            raise TypeError(f"expected a binary message, the app sent text: {message['text']!r}")
        data: bytes = message["bytes"]
        return data

    async def receive_json(self, *, timeout: float | None = None) -> Any:
        """The next message, parsed as JSON (text or binary)."""
        return json.loads(await self.receive(timeout=timeout))

    async def _send(self, event: dict[str, Any], timeout: float | None) -> None:
        if self._server_close is not None:
            raise ConnectionClosed(*self._server_close)
        if self._client_closed:
            raise RuntimeError("this session was closed by the test")
        limit = self._deadline(timeout)
        try:
            with trio.fail_after(limit):
                # Bounded as hypercorn's queue is: an app that does not receive slows us.
                await self._to_app.send(event)
        except trio.TooSlowError:
            raise trio.TooSlowError(
                f"the app did not take the message within {limit}s "
                f"({_APP_QUEUE_SIZE} are already waiting for its receive())"
            ) from None

    async def send_text(self, data: str, *, timeout: float | None = None) -> None:
        """Send a text message to the app."""
        await self._send({"type": "websocket.receive", "text": data, "bytes": None}, timeout)

    async def send_bytes(self, data: bytes, *, timeout: float | None = None) -> None:
        """Send a binary message to the app."""
        await self._send({"type": "websocket.receive", "bytes": data, "text": None}, timeout)

    async def send_json(self, data: Any, *, timeout: float | None = None) -> None:
        """Send ``data`` as a JSON text message."""
        await self.send_text(json.dumps(data), timeout=timeout)

    async def close(
        self, code: int = 1000, reason: str = "", *, timeout: float | None = None
    ) -> None:
        """Close from the client's side: the app receives ``code`` and ``reason``."""
        if self._client_closed or self._server_close is not None:
            return
        self._client_closed = True
        with trio.fail_after(self._deadline(timeout)):
            await self._to_app.send(
                {"type": "websocket.disconnect", "code": code, "reason": reason}
            )

    @property
    def close_code(self) -> int | None:
        """The code the app closed with, once it has."""
        return None if self._server_close is None else self._server_close[0]

    @property
    def close_reason(self) -> str | None:
        """The reason the app closed with, once it has."""
        return None if self._server_close is None else self._server_close[1]


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
        self._lifespan: _Lifespan | None = None

    async def __aenter__(self) -> TestClient:
        self._state = {}
        self._lifespan = _Lifespan(self.app, self._state, self.timeout)
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
        return await self._manager.__aexit__(*exc_info)

    def __await__(self) -> Generator[Any, None, NoReturn]:
        raise TypeError(_ASYNC_WITH_CONNECT)

    def __enter__(self) -> NoReturn:
        raise TypeError(_ASYNC_WITH_CONNECT)

    def __exit__(self, *exc_info: object) -> None:  # pragma: no cover - __enter__ raised
        pass


class _Lifespan:
    """The ASGI lifespan protocol, run in its own task, as a server runs it."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], timeout: float) -> None:
        self._app = app
        self._state = state
        self._timeout = timeout
        self._shutdown = ServerShutdown()
        state[STATE_KEY] = self._shutdown
        self._to_app, self._inbox = trio.open_memory_channel[dict[str, Any]](2)
        self._started = trio.Event()
        self._stopped = trio.Event()
        self._failed: str | None = None
        self._supported = True
        self._nursery_manager: Any = None
        self._nursery: trio.Nursery | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}
        try:
            await self._app(scope, self._inbox.receive, self._send)
        except Exception:
            # As hypercorn: an app that does not do lifespan raises; go on without it.
            self._supported = False
        finally:
            self._started.set()
            self._stopped.set()

    async def _send(self, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failed = message.get("message", "")
            self._started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._stopped.set()

    async def start(self) -> None:
        # A nursery that outlives this call: entered here, exited in stop().
        self._nursery_manager = trio.open_nursery()
        self._nursery = nursery = await self._nursery_manager.__aenter__()
        nursery.start_soon(self._run)
        self._to_app.send_nowait({"type": "lifespan.startup"})
        try:
            with trio.fail_after(self._timeout):
                await self._started.wait()
            if self._failed is not None:
                raise RuntimeError(f"the app failed to start: {self._failed}")
        except BaseException:
            nursery.cancel_scope.cancel()
            await self._close()  # noqa: ASYNC102 (closes the nursery it just cancelled)
            raise

    def begin_shutdown(self) -> None:
        self._shutdown.begin()

    async def stop(self) -> None:
        self._shutdown.begin()
        with trio.move_on_after(self._timeout, shield=True):
            if self._supported and not self._stopped.is_set():
                await self._to_app.send({"type": "lifespan.shutdown"})
                await self._stopped.wait()
        # Outside the scope above: a nursery must close in the scope it opened in.
        await self._close()  # noqa: ASYNC102 (it only cancels and collects the task)

    async def _close(self) -> None:
        manager, nursery = self._nursery_manager, self._nursery
        self._nursery_manager = self._nursery = None
        if manager is None or nursery is None:
            return
        nursery.cancel_scope.cancel()
        try:
            await manager.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            errors = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
            if errors:
                raise


# -- A real server ---------------------------------------------------------------------


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
