"""Telling open connections that the server is stopping.

hypercorn's trio worker gives an open WebSocket no notice of a shutdown: it cancels the
application at ``graceful_timeout``, and the lifespan ``shutdown`` event comes only after
every connection is gone. So trio_bocaws hooks the server's shutdown trigger (in
:func:`trio_bocaws.serve`, and for ``hypercorn --worker-class trio`` through
:mod:`trio_bocaws.hypercorn_fixes`) and hands each connection a :class:`ServerShutdown`
through a context variable, which every task the server starts inherits. (Not through the
ASGI lifespan state: the server copies that dict into every connection's scope, and a
non-empty one costs each idle connection 120 bytes more.) A scope's own state may carry
one too, as the test client's does. When the trigger fires, every watched connection is
cancelled and closed with its ``shutdown_close_code`` (1001, "going away") at once,
instead of at the deadline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Final, Protocol

__all__ = [
    "STATE_KEY",
    "Listener",
    "ServerShutdown",
    "announce_shutdown",
    "current_server_shutdown",
    "server_shutdown_of",
]

STATE_KEY: Final = "trio_bocaws.shutdown"
"""The key of a :class:`ServerShutdown` in a connection's ASGI state (the test client's)."""

_CURRENT: Final[ContextVar[ServerShutdown | None]] = ContextVar(
    "trio_bocaws.server_shutdown", default=None
)


class Listener(Protocol):
    """What listens for the shutdown: a connection's block (``_lifetime.Lifetime``)."""

    def shut_down(self) -> None:
        """Cancel, and close with the connection's shutdown code."""


class ServerShutdown:
    """One server's "we are stopping" signal, and the connections that listen for it."""

    __slots__ = ("_connections", "started")

    def __init__(self) -> None:
        # A dict used as an ordered set: with thousands of entries a set's table takes up
        # to 105 bytes per entry (5,000 connections), a dict's 30.
        self._connections: dict[Listener, None] = {}
        self.started = False

    def begin(self) -> None:
        """Cancel every watched connection; each closes with its shutdown code."""
        self.started = True
        for listener in list(self._connections):
            listener.shut_down()
        self._connections.clear()

    def watch(self, listener: Listener) -> None:
        if self.started:
            listener.shut_down()
        else:
            self._connections[listener] = None

    def unwatch(self, listener: Listener) -> None:
        self._connections.pop(listener, None)

    def __len__(self) -> int:
        return len(self._connections)

    # Middleware may copy the scope, state included (hypercorn's ProxyFixMiddleware copies
    # it deeply): every copy must still be this server's one signal.
    def __copy__(self) -> ServerShutdown:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ServerShutdown:
        return self


def server_shutdown_of(scope: Mapping[str, Any]) -> ServerShutdown | None:
    """The shutdown signal of the server that gave us ``scope``, if it has one."""
    state = scope.get("state")
    if state:
        shutdown = state.get(STATE_KEY)
        if isinstance(shutdown, ServerShutdown):
            return shutdown
    return _CURRENT.get()


def current_server_shutdown() -> ServerShutdown | None:
    """The shutdown signal of the server this task runs in (its shutdown trigger too)."""
    return _CURRENT.get()


@contextlib.contextmanager
def announce_shutdown(
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    shutdown: ServerShutdown,
) -> Iterator[Callable[[], Awaitable[None]] | None]:
    """Run a server inside this block so that ``shutdown`` reaches every connection.

    Connections handled by tasks started inside the block watch ``shutdown``; it begins
    when the shutdown trigger this yields (to give the server instead of
    ``shutdown_trigger``) fires.
    """
    token = _CURRENT.set(shutdown)
    try:
        if shutdown_trigger is None:
            yield None
            return

        async def trigger() -> None:
            await shutdown_trigger()
            shutdown.begin()

        yield trigger
    finally:
        _CURRENT.reset(token)
