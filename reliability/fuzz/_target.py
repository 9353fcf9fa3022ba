"""The server under fuzz, a bystander on it, and the checks made after every session.

:class:`FuzzTarget` runs two servers with :func:`trio_bocaws.serve` in this Trio run, one on
a plain port and one with TLS (a ``trustme`` certificate; ALPN offers ``h2`` and
``http/1.1``), each with a bystander: a trio-websocket client over HTTP/1.1 that must still
echo after every session. A server whose ``serve()`` raises has crashed (in Trio, an
exception that escapes a connection's task cancels every connection): the crash is recorded
with its signature and the server started again on a new port, so a campaign goes on.
"""

from __future__ import annotations

import logging
import re
import ssl
import sys
import traceback
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import attrs
import trio
import trio.testing
import trio_websocket
import trustme

import trio_bocaws

from ._actions import Session, Transport
from ._app import ALLOWED_ORIGIN, make_app
from ._client import BROKEN, run_session

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["FuzzTarget", "Outcome", "signature_of"]

#: Longest a session may take; the actions' own waits are far shorter.
SESSION_LIMIT: Final = 5.0
#: Longest the bystander and a fresh connection may take to echo.
CHECK_LIMIT: Final = 5.0
#: How long the server must stay quiet to count as idle. Loopback delivers at once; this
#: only lets the kernel's readiness reach Trio's I/O poll.
_IDLE_CUSHION: Final = 0.001

_CLIENT_ERRORS: Final = (
    *BROKEN,
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    trio.TooSlowError,
)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


_SHORT_PATH: Final = re.compile(
    r".*/site-packages/|.*/lib/python3\.\d+/|.*?/(?=(?:trio_bocaws|reliability)/)"
)


def _where(error: BaseException) -> str:
    """The innermost frame of ``error``'s traceback, its path cut to the package."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    path = _SHORT_PATH.sub("", Path(frame.filename).as_posix(), count=1)
    return f"{frame.name} ({path}:{frame.lineno})"


def signature_of(error: BaseException) -> str:
    """``"KeyError in _handle_events (hypercorn/protocol/h2.py:259)"``: the exception's
    type and the innermost frame it was raised in."""
    return f"{type(error).__name__} in {_where(error)}"


def _expected_client_failure(error: BaseException) -> bool:
    """Whether ``error`` is only a connection the server broke (maybe in exception groups)."""
    return all(isinstance(leaf, _CLIENT_ERRORS) for leaf in _leaves(error))


@attrs.define
class Outcome:
    """What one session did to the server."""

    crashes: list[str] = attrs.Factory(list)
    """Each time ``serve()`` raised during the session, the signature of what escaped."""
    bystander_failed: bool = False
    """A bystander did not echo after the session."""
    fresh_failed: bool = False
    """A new connection, made after the session, did not echo."""
    stuck: bool = False
    """The session ran past :data:`SESSION_LIMIT` (the server held it)."""
    never_idle: bool = False
    """The server was still busy :data:`SESSION_LIMIT` after the session ended."""
    logged_errors: list[str] = attrs.Factory(list)
    """Signatures of errors the server logged (contained: the worker went on)."""
    views_left: int = 0
    """Views the session opened still running once its connection was gone and the server
    idle: each can only be waiting on a timer (or for ever)."""

    @property
    def failed(self) -> bool:
        """The session broke something (a logged, contained error is no failure)."""
        return bool(
            self.crashes
            or self.bystander_failed
            or self.fresh_failed
            or self.stuck
            or self.never_idle
        )


class _ErrorTally(logging.Handler):
    """Counts the errors the server logs, by signature; prints nothing."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            errors = _leaves(error)
            self.seen.extend(f"{record.name}: {signature_of(leaf)}" for leaf in errors)
        else:
            self.seen.append(f"{record.name}: {str(record.msg).splitlines()[0][:80]}")


class _QuietTally(logging.Filter):
    """A logger filter for hypercorn's error log (whose handlers hypercorn replaces at each
    start): counts its errors into ``tally``, and drops every record when ``quiet``."""

    def __init__(self, tally: _ErrorTally, quiet: bool) -> None:
        super().__init__()
        self._tally = tally
        self._quiet = quiet

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self._tally.emit(record)
        return not self._quiet


class _Server:
    """One ``serve()``, restarted after a crash; records what escaped it."""

    def __init__(self, config: trio_bocaws.ServerConfig) -> None:
        self._config = config
        self._stop = trio.Event()
        self._up = trio.Event()
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.url = ""
        self.app = make_app()
        self.crashes: list[str] = []
        self.tracebacks: dict[str, str] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    self.app = make_app()
                    urls = await nursery.start(
                        partial(
                            trio_bocaws.serve,
                            self.app,
                            self._config,
                            shutdown_trigger=self._stop.wait,
                        )
                    )
                    parts = urlsplit(urls[0])
                    assert parts.hostname is not None and parts.port is not None
                    self.address = (parts.hostname, parts.port)
                    self.url = urls[0]
                    self._up.set()
                    if not started:
                        started = True
                        task_status.started()
                return  # serve() returned: stopped on purpose
            except BaseExceptionGroup as group:
                errors = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
                if not errors:
                    raise
                self._up = trio.Event()
                # One crash, however many connections' errors it carried (a race often
                # raises the same error twice): its signature names each kind once.
                signature = " + ".join(sorted({signature_of(error) for error in errors}))
                self.crashes.append(signature)
                self.tracebacks.setdefault(
                    signature,
                    "\n".join("".join(traceback.format_exception(error)) for error in errors),
                )

    async def wait_up(self) -> None:
        await self._up.wait()

    def stop(self) -> None:
        self._stop.set()


class _Bystander:
    """A trio-websocket client that stays connected and echoes when asked."""

    def __init__(self, server: _Server, ssl_context: ssl.SSLContext | None) -> None:
        self._server = server
        self._ssl_context = ssl_context
        self._connection: trio_websocket.WebSocketConnection | None = None
        self._drop = trio.Event()
        self._ready = trio.Event()
        self._closing = False
        self._count = 0

    def close(self) -> None:
        self._closing = True
        self._drop.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while not self._closing:
            await self._server.wait_up()
            try:
                async with websocket(self._server.address, "/echo", self._ssl_context) as ws:
                    self._connection = ws
                    self._ready.set()
                    if not started:
                        started = True
                        task_status.started()
                    await self._drop.wait()
            except Exception as error:
                if not _expected_client_failure(error):
                    raise
            self._connection = None
            self._drop = trio.Event()
            await trio.sleep(0.01)  # a server that refuses it is not hammered

    async def echoes(self) -> bool:
        """Whether the bystander still echoes; if not, it reconnects before returning."""
        self._count += 1
        token = f"still there? {self._count}"
        connection = self._connection
        ok = False
        if connection is not None:
            try:
                with trio.fail_after(CHECK_LIMIT):
                    await connection.send_message(token)
                    ok = await connection.get_message() == token
            except Exception as error:
                if not _expected_client_failure(error):
                    raise
        if not ok:
            self._ready = trio.Event()
            self._drop.set()
            with trio.move_on_after(CHECK_LIMIT):
                await self._ready.wait()
        return ok


@asynccontextmanager
async def websocket(
    address: tuple[str, int], path: str, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client over HTTP/1.1 (TLS with ``ssl_context``) whose TCP stream is
    always closed, whatever the server did."""
    tcp = await trio.open_tcp_stream(*address)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
    if ssl_context is not None:
        stream = trio.SSLStream(tcp, ssl_context, server_hostname="localhost")
    try:
        async with trio.open_nursery() as nursery:
            connection = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                "localhost",
                path,
                extra_headers=[(b"origin", ALLOWED_ORIGIN.encode())],
            )
            try:
                yield connection
            finally:
                with trio.move_on_after(1, shield=True):
                    await connection.aclose()
    finally:
        await trio.aclose_forcefully(stream)


async def _settle() -> None:
    await trio.testing.wait_all_tasks_blocked(_IDLE_CUSHION)


class FuzzTarget:
    """Two servers (plain and TLS), their bystanders, and :meth:`run` for one session.

    Use as ``async with FuzzTarget() as target:``.
    """

    def __init__(self, *, quiet: bool = False) -> None:
        authority = trustme.CA()
        self._certificate = authority.issue_cert("localhost", "127.0.0.1")
        self._client_contexts: dict[str, ssl.SSLContext] = {}
        for protocol in ("h2", "http/1.1"):
            context = ssl.create_default_context()
            authority.configure_trust(context)
            context.set_alpn_protocols([protocol])
            self._client_contexts[protocol] = context
        self._quiet = quiet
        self._tally = _ErrorTally()
        self._hypercorn_filter = _QuietTally(self._tally, quiet)
        self.sessions = 0

    @asynccontextmanager
    async def _files(self) -> AsyncIterator[tuple[str, str]]:
        with (
            self._certificate.cert_chain_pems[0].tempfile() as certfile,
            self._certificate.private_key_pem.tempfile() as keyfile,
        ):
            yield certfile, keyfile

    async def __aenter__(self) -> FuzzTarget:
        self._running = self._run()
        await self._running.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Only hands over to _run's own exit, which stops the servers (bounded) and must
        # see a cancellation like any nursery.
        await self._running.__aexit__(*exc_info)  # type: ignore[arg-type]  # noqa: ASYNC102

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        hypercorn_log = logging.getLogger("hypercorn.error")
        library_log = logging.getLogger("trio_bocaws")
        hypercorn_log.addFilter(self._hypercorn_filter)
        library_log.addHandler(self._tally)
        propagate = library_log.propagate
        library_log.propagate = not self._quiet
        try:
            async with self._files() as (certfile, keyfile):
                base = trio_bocaws.ServerConfig(
                    bind="127.0.0.1:0",
                    graceful_timeout=1.0,
                    log_level="error",
                    write_timeout=2.0,
                    gc_full_threshold=None,
                )
                self.plain = _Server(base)
                self.secure = _Server(attrs.evolve(base, certfile=certfile, keyfile=keyfile))
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.plain.run)
                    await nursery.start(self.secure.run)
                    self._bystanders = [
                        _Bystander(self.plain, None),
                        _Bystander(self.secure, self._client_contexts["http/1.1"]),
                    ]
                    for bystander in self._bystanders:
                        await nursery.start(bystander.run)
                    try:
                        yield
                    finally:
                        for bystander in self._bystanders:
                            bystander.close()
                        self.plain.stop()
                        self.secure.stop()
                        nursery.cancel_scope.deadline = trio.current_time() + 5
        finally:
            hypercorn_log.removeFilter(self._hypercorn_filter)
            library_log.removeHandler(self._tally)
            library_log.propagate = propagate

    async def run(self, session: Session) -> Outcome:
        """Carry out ``session``, then check the bystanders and a fresh connection."""
        self.sessions += 1
        server = self.secure if session.transport.tls else self.plain
        crashes_before = [len(self.plain.crashes), len(self.secure.crashes)]
        logged_before = len(self._tally.seen)
        servers = (self.plain, self.secure)
        views_before = [(each, each.app, each.app.connections) for each in servers]
        outcome = Outcome()
        context = self._client_contexts["h2" if session.transport.http2 else "http/1.1"]
        with trio.move_on_after(SESSION_LIMIT) as limit:
            await run_session(session, server.address, context, _settle)
        outcome.stuck = limit.cancelled_caught
        with trio.move_on_after(SESSION_LIMIT) as idle:
            await _settle()
        outcome.never_idle = idle.cancelled_caught
        # A view the session opened must have ended with its connection. (A crash replaces
        # the app, whose count starts again from 0.)
        outcome.views_left = sum(
            max(each.app.connections - before, 0) if each.app is app else 0
            for each, app, before in views_before
        )
        for bystander in self._bystanders:
            if not await bystander.echoes():
                outcome.bystander_failed = True
        for index, each in enumerate((self.plain, self.secure)):
            outcome.crashes += each.crashes[crashes_before[index] :]
        with trio.fail_after(CHECK_LIMIT):
            await server.wait_up()
        outcome.fresh_failed = not await self._fresh_connection_echoes(session.transport)
        outcome.logged_errors = self._tally.seen[logged_before:]
        return outcome

    async def _fresh_connection_echoes(self, transport: Transport) -> bool:
        server = self.secure if transport.tls else self.plain
        context = self._client_contexts["http/1.1"] if transport.tls else None
        try:
            with trio.fail_after(CHECK_LIMIT):
                async with websocket(server.address, "/echo", context) as ws:
                    await ws.send_message("hello")
                    return await ws.get_message() == "hello"
        except Exception as error:
            if not _expected_client_failure(error):
                raise
            return False

    def traceback_of(self, signature: str) -> str:
        """The first traceback seen for a crash signature."""
        return self.plain.tracebacks.get(signature) or self.secure.tracebacks.get(signature, "")

    def crash_counts(self) -> Counter[str]:
        return Counter(self.plain.crashes + self.secure.crashes)
