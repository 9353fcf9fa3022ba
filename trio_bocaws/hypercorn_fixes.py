"""Small, switchable fixes to hypercorn's WebSocket stream, for the versions we verified.

Importing :mod:`trio_bocaws` installs them, so they apply under
``hypercorn --worker-class trio module:app`` (the worker imports your module, which imports
trio_bocaws) as well as under :func:`hypercorn.trio.serve`. They change methods of
``hypercorn.protocol.ws_stream.WSStream`` and ``hypercorn.trio.tcp_server.TCPServer``,
subclass the wsproto connection that ``WSStream`` uses, and wrap the trio worker's
``worker_serve``, for every ASGI app in the process:

1. **The client's close code reaches the app.** hypercorn answers the client's close frame
   but reports ``websocket.disconnect`` with code 1006 and no reason, whatever the client
   sent (https://github.com/pgjones/hypercorn/issues/127). With the fix the app receives
   the client's code and reason (1005 for a close frame without a code), and 1009 when
   hypercorn closed the connection because a message was over
   ``websocket_max_message_size``.
2. **A send after the client left is a checkpoint.** hypercorn drops such a send without
   yielding to the scheduler (once the stream is closed, and also in the moment between
   the client's close frame and the stream closing, when wsproto refuses to send), so a
   loop that only sends spins forever once the client has gone, starving every other task
   in the worker. With the fix the dropped send yields, so other tasks (including the one
   that reads the disconnect) run.
3. **Open WebSockets hear of a shutdown when it starts.** hypercorn gives them no notice and
   cancels them at ``graceful_timeout``. With the fix, the shutdown trigger also hands
   every connection inside ``async with ws`` (every :class:`~trio_bocaws.App` view) a
   cancellation at once, and they close with 1001 "server shutting down". This needs a
   shutdown trigger, which ``hypercorn --worker-class trio`` has with its default of one
   or more worker processes (``--workers 0`` has none). In command-line workers SIGTERM
   also starts the graceful shutdown: the supervisor SIGTERMs the remaining workers as
   soon as one has exited, which killed them mid-shutdown.
4. **A close racing a send no longer crashes the server.** When a connection closes while
   another task is sending on it (the app closes as the client's close frame arrives, say,
   or ``read_timeout`` drops a peer while a ping goes out), hypercorn's ``send_eof`` holds
   the stream across a checkpoint and the other send fails with ``BusyResourceError``,
   which escapes every nursery and stops the whole worker. The fix shuts the socket down
   for writing without yielding, so the racing send fails as on any closed connection.
5. **A client that stops reading cannot hold a connection (or a shutdown) forever.**
   hypercorn writes inside a cancel scope shielded with no deadline: once a client stops
   reading and the buffers are full, the app's ``send`` (and any shutdown waiting for it)
   blocks until the client reads again. The fix sets ``TCP_USER_TIMEOUT`` (Linux) on every
   accepted connection: the kernel aborts a connection whose sent data stays unacknowledged,
   or whose receive window stays shut, that long, and the blocked send fails as on any
   closed connection. The timeout is ``DEFAULT_WRITE_TIMEOUT`` seconds, or the
   ``trio_bocaws_write_timeout`` attribute of hypercorn's ``Config`` (which
   :class:`~trio_bocaws.ServerConfig` sets from its ``write_timeout``; ``None`` turns it
   off). It costs one ``setsockopt`` per connection, nothing per message.
6. **An oversized message no longer leaves the connection open for ever.** When a message
   goes over ``websocket_max_message_size``, hypercorn sends 1009 and stops reading the
   events of that read, dropping the client's close frame if it came in the same read;
   the stream then never closes, and the app waits in ``receive()`` for good. The fix
   reads on to the close.
7. **A closed connection's ping task ends with it.** With ``websocket_ping_interval`` set,
   hypercorn's ping task checks whether the stream closed only after sleeping out its
   interval, so a closed connection lingers for up to one interval, and a graceful
   shutdown waits for it (up to ``graceful_timeout``). The fix cancels it when the
   stream closes.
8. **A frame the server cannot accept is answered with a close frame.** When wsproto
   rejects what a client sent (text that is not UTF-8: 1007; a protocol error: 1002), it
   reports a close, but hypercorn only answers closes the client sent, so it drops the
   TCP connection with no close frame: the client sees 1006, and so does the app. The fix
   has hypercorn answer with a close frame carrying wsproto's code and reason (RFC 6455,
   "fail the WebSocket connection"), and the app is told that code. It swaps the wsproto
   connection class hypercorn's WebSocket stream uses for a subclass.

To keep hypercorn exactly as it is, set the environment variable
``TRIO_BOCAWS_HYPERCORN_FIXES=0`` before importing trio_bocaws, or call :func:`uninstall`.
On a hypercorn version not in :data:`VERIFIED_VERSIONS` nothing is installed and
:func:`installed` returns ``False``; apps then see code 1006 for every client close.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket as socket_module
from collections.abc import Awaitable, Callable, Generator
from importlib.metadata import PackageNotFoundError, version
from socket import SHUT_WR
from typing import Any, Final

import trio

__all__ = [
    "DEFAULT_WRITE_TIMEOUT",
    "ENVIRONMENT_VARIABLE",
    "VERIFIED_VERSIONS",
    "WRITE_TIMEOUT_OPTION",
    "install",
    "installed",
    "uninstall",
]

logger = logging.getLogger("trio_bocaws")

VERIFIED_VERSIONS: Final = frozenset({"0.17.3", "0.18.0"})
"""hypercorn releases whose ``ws_stream.py`` these fixes were written for and tested on."""

DEFAULT_WRITE_TIMEOUT: Final = 30.0
"""Seconds a connection may leave sent data unacknowledged (a client not reading) before
the kernel drops it; see fix 5. Long enough for a stalled mobile network to recover."""

WRITE_TIMEOUT_OPTION: Final = "trio_bocaws_write_timeout"
"""The attribute of hypercorn's ``Config`` that overrides :data:`DEFAULT_WRITE_TIMEOUT`."""

ENVIRONMENT_VARIABLE: Final = "TRIO_BOCAWS_HYPERCORN_FIXES"
"""Set to ``0`` to stop ``import trio_bocaws`` from installing the fixes."""

# Where the close the fixed stream will report is kept, on each WSStream instance, and the
# cancel scope of its ping task.
_CLOSE_ATTRIBUTE: Final = "_trio_bocaws_close"
_PINGS_ATTRIBUTE: Final = "_trio_bocaws_pings"

_originals: dict[str, Any] = {}
_wsproto_connection: list[Any] = []  # the class hypercorn's stream used before install()


def _hypercorn_version() -> str | None:
    try:
        return version("hypercorn")
    except PackageNotFoundError:  # pragma: no cover - hypercorn is a dependency
        return None


def installed() -> bool:
    """Whether the fixes are in place."""
    return bool(_originals)


def install() -> bool:
    """Install the fixes if this hypercorn version is one we verified.

    Returns:
        Whether the fixes are installed (also when they already were).
    """
    if _originals:
        return True
    found = _hypercorn_version()
    if found not in VERIFIED_VERSIONS:
        logger.info(
            "hypercorn %s is not a version trio_bocaws verified (%s); its WebSocket fixes "
            "are not installed and client close codes are reported as 1006",
            found,
            ", ".join(sorted(VERIFIED_VERSIONS)),
        )
        return False

    import hypercorn.protocol.ws_stream as ws_stream
    import hypercorn.trio
    import hypercorn.trio.run
    from hypercorn.protocol.events import Data, StreamClosed
    from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
    from hypercorn.trio.tcp_server import TCPServer
    from wsproto.connection import Connection, ConnectionState
    from wsproto.events import CloseConnection, Event
    from wsproto.frame_protocol import CloseReason

    from ._gc import FULL_THRESHOLD_OPTION, full_collections_after
    from ._shutdown import ServerShutdown, announce_shutdown

    original_worker_serve: Any = hypercorn.trio.run.worker_serve
    original_close = TCPServer._close
    original_init = TCPServer.__init__
    original_handle = WSStream.handle
    original_send_event = WSStream._send_wsproto_event
    original_send_pings = WSStream._send_pings
    original_app_send = WSStream.app_send

    # The replacements are plain functions that return the coroutine to await (hypercorn's
    # own, most of the time) rather than coroutines awaiting it: every message passes
    # through two of them, and an extra coroutine frame each would cost more than the
    # checks themselves.

    def _send_wsproto_event(self: Any, event: Any) -> Awaitable[None]:
        # While the app has not closed, any close hypercorn sends is either the echo of the
        # client's close (same code and reason) or its own 1009 for an oversized message:
        # in both cases the code the app should be told.
        if isinstance(event, CloseConnection) and self.state == ASGIWebsocketState.CONNECTED:
            setattr(self, _CLOSE_ATTRIBUTE, (int(event.code), event.reason or ""))
        return original_send_event(self, event)

    async def handle_then_drain(self: Any, event: Any) -> None:
        await original_handle(self, event)
        close = getattr(self, _CLOSE_ATTRIBUTE, None)
        if close is None or close[0] != CloseReason.MESSAGE_TOO_BIG or self.closed:
            return
        # hypercorn stops reading events at an oversized message and drops what came after
        # it in the same read: the client's answer to the 1009, above all. Without it the
        # stream never closes and the app waits in receive() for ever.
        for follow in self.connection.events():
            if isinstance(follow, CloseConnection):
                await self.send(StreamClosed(stream_id=self.stream_id))
                return

    async def _send_pings(self: Any) -> None:
        with trio.CancelScope() as scope:
            setattr(self, _PINGS_ATTRIBUTE, scope)
            await original_send_pings(self)

    def handle(self: Any, event: Any) -> Awaitable[None]:
        if isinstance(event, StreamClosed):
            pings = getattr(self, _PINGS_ATTRIBUTE, None)
            if pings is not None:
                pings.cancel()
        if isinstance(event, Data) and self.state == ASGIWebsocketState.CONNECTED:
            close = getattr(self, _CLOSE_ATTRIBUTE, None)
            if (close is not None and close[0] == CloseReason.MESSAGE_TOO_BIG) or (
                self.buffer.length + len(event.data) > self.buffer.max_length
            ):
                # Only where a message may be, or is, too big: one more frame otherwise.
                return handle_then_drain(self, event)
        if isinstance(event, StreamClosed):
            close = getattr(self, _CLOSE_ATTRIBUTE, None)
            if (
                close is not None
                and not self.closed
                and self.app_put is not None
                and self.state == ASGIWebsocketState.CONNECTED
            ):
                self.closed = True
                code, reason = close
                return self.app_put(  # type: ignore[no-any-return]
                    {"type": "websocket.disconnect", "code": code, "reason": reason}
                )
        return original_handle(self, event)

    def app_send(self: Any, message: Any) -> Awaitable[None]:
        if message is not None and (
            self.closed
            or (
                message["type"] == "websocket.send"
                and self.state == ASGIWebsocketState.CONNECTED
                and self.connection.state is not ConnectionState.OPEN
            )
        ):
            # hypercorn would drop this message and return without yielding.
            return trio.lowlevel.checkpoint()  # noqa: ASYNC105 (awaited by hypercorn)
        return original_app_send(self, message)

    async def worker_serve(  # the signature of hypercorn.trio.run.worker_serve
        app: Any,
        config: Any,
        *,
        sockets: Any = None,
        shutdown_trigger: Any = None,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with contextlib.ExitStack() as stack:
            if _is_command_line_worker(shutdown_trigger):
                signals = stack.enter_context(trio.open_signal_receiver(signal.SIGTERM))
                shutdown_trigger = _or_sigterm(shutdown_trigger, signals)
            shutdown_trigger = stack.enter_context(
                announce_shutdown(shutdown_trigger, ServerShutdown())
            )
            # Our runner's collector setting, for the worker processes it starts (plain
            # hypercorn has none, and keeps the interpreter's).
            stack.enter_context(
                full_collections_after(getattr(config, FULL_THRESHOLD_OPTION, None))
            )
            await original_worker_serve(
                app,
                config,
                sockets=sockets,
                shutdown_trigger=shutdown_trigger,
                task_status=task_status,
            )

    async def _close(self: Any) -> None:
        # As hypercorn's own, minus the checkpoint that trio's send_eof takes while it
        # holds the stream (SSL streams have no half-close; they only close).
        socket = getattr(self.stream, "socket", None)
        if socket is not None and not socket.did_shutdown_SHUT_WR:
            with contextlib.suppress(OSError):
                socket.shutdown(SHUT_WR)
        await self.stream.aclose()

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _limit_unacknowledged_writes(self.stream, self.config)

    original_connection = ws_stream.Connection  # type: ignore[attr-defined]

    class _AnsweringConnection(Connection):
        """wsproto's connection, which hypercorn's stream answers on a protocol error."""

        def events(self) -> Generator[Event, None, None]:
            for event in super().events():
                if type(event) is CloseConnection and self._state is ConnectionState.OPEN:
                    # wsproto failed the connection (a close the client sent moves the
                    # state on first). Treated as the client's close, hypercorn answers it
                    # with a close frame of the same code and reason, then ends the stream.
                    self._state = ConnectionState.REMOTE_CLOSING
                yield event

    _originals.update(
        _send_pings=original_send_pings,
        tcp_init=original_init,
        handle=original_handle,
        _send_wsproto_event=original_send_event,
        app_send=original_app_send,
        worker_serve=original_worker_serve,
        tcp_close=original_close,
    )
    TCPServer._close = _close  # type: ignore[method-assign]
    TCPServer.__init__ = __init__  # type: ignore[method-assign]
    # hypercorn.trio.serve and the command line's trio_worker look worker_serve up in
    # their own module at call time, after the app (and so this module) was imported.
    hypercorn.trio.run.worker_serve = worker_serve
    hypercorn.trio.worker_serve = worker_serve  # type: ignore[attr-defined]
    WSStream.handle = handle  # type: ignore[method-assign,assignment]
    WSStream._send_wsproto_event = _send_wsproto_event  # type: ignore[method-assign,assignment]
    WSStream.app_send = app_send  # type: ignore[method-assign,assignment]
    WSStream._send_pings = _send_pings  # type: ignore[method-assign]
    _wsproto_connection.append(original_connection)
    ws_stream.Connection = _AnsweringConnection  # type: ignore[attr-defined]
    _h2_patches().install()
    return True


def _limit_unacknowledged_writes(stream: Any, config: Any) -> None:
    """Set TCP_USER_TIMEOUT on the connection's socket (plain or under TLS), if possible."""
    timeout = getattr(config, WRITE_TIMEOUT_OPTION, DEFAULT_WRITE_TIMEOUT)
    option = getattr(socket_module, "TCP_USER_TIMEOUT", None)  # Linux only
    if timeout is None or option is None:
        return
    plain = getattr(stream, "transport_stream", stream)
    sock = getattr(plain, "socket", None)
    if sock is None:  # pragma: no cover - a Unix socket or an unusual stream
        return
    with contextlib.suppress(OSError):  # not TCP (a Unix socket): nothing to limit
        sock.setsockopt(socket_module.IPPROTO_TCP, option, int(timeout * 1000))


def _is_command_line_worker(shutdown_trigger: Any) -> bool:
    """Whether this is a worker process that hypercorn's command line started."""
    from hypercorn.utils import check_multiprocess_shutdown_event

    return (
        isinstance(shutdown_trigger, functools.partial)
        and shutdown_trigger.func is check_multiprocess_shutdown_event
    )


def _or_sigterm(
    shutdown_trigger: Callable[[], Awaitable[None]], signals: Any
) -> Callable[[], Awaitable[None]]:
    """Also treat SIGTERM (from ``signals``, a Trio signal receiver) as the trigger.

    hypercorn's supervisor asks its workers to stop through a shared event they poll every
    0.1 s, and as soon as the first worker has exited it SIGTERMs the others; a trio worker
    dies of that at once, and its clients see 1006. The receiver stays open for the whole
    life of the worker, so that a SIGTERM that comes during the shutdown is absorbed too.
    """

    async def trigger() -> None:
        async with trio.open_nursery() as nursery:

            async def first_of(wait: Callable[[], Awaitable[Any]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first_of, shutdown_trigger)
            nursery.start_soon(first_of, signals.__anext__)

    return trigger


def uninstall() -> None:
    """Restore hypercorn's own methods."""
    if not _originals:
        return
    _h2_patches().uninstall()
    import hypercorn.trio
    import hypercorn.trio.run
    from hypercorn.protocol.ws_stream import WSStream
    from hypercorn.trio.tcp_server import TCPServer

    TCPServer._close = _originals.pop("tcp_close")  # type: ignore[method-assign]
    TCPServer.__init__ = _originals.pop("tcp_init")  # type: ignore[method-assign]
    worker_serve: Any = _originals.pop("worker_serve")
    hypercorn.trio.run.worker_serve = worker_serve
    hypercorn.trio.worker_serve = worker_serve  # type: ignore[attr-defined]
    import hypercorn.protocol.ws_stream as ws_stream

    ws_stream.Connection = _wsproto_connection.pop()  # type: ignore[attr-defined]
    for name, method in _originals.items():
        setattr(WSStream, name, method)
    _originals.clear()


def _h2_patches() -> Any:
    """The HTTP/2 fixes (WebSockets over HTTP/2), imported with hypercorn only when used."""
    from . import _h2_patches

    return _h2_patches


def install_unless_disabled() -> None:
    """What ``import trio_bocaws`` runs: install unless the environment says not to."""
    if os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower() in {"0", "false", "no", "off"}:
        return
    install()
