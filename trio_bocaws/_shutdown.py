"""Telling open connections that the server is stopping.

hypercorn's trio worker gives an open WebSocket no notice of a shutdown: it cancels the
application at ``graceful_timeout``, and the lifespan ``shutdown`` event comes only after
every connection is gone. So trio_bocaws hooks the server's shutdown trigger (in
:func:`trio_bocaws.serve`, and for ``hypercorn --worker-class trio`` through
:mod:`trio_bocaws.hypercorn_fixes`) and hands each connection a :class:`ServerShutdown`
through the ASGI lifespan state, which the server copies into every connection's scope.
When the trigger fires, every watched connection is cancelled and closed with its
``shutdown_close_code`` (1001, "going away") at once, instead of at the deadline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._websocket import WebSocket

__all__ = ["STATE_KEY", "ServerShutdown", "announce_shutdown", "server_shutdown_of"]

STATE_KEY: Final = "trio_bocaws.shutdown"
"""The key of the :class:`ServerShutdown` in the ASGI lifespan and connection state."""


class ServerShutdown:
    """One server's "we are stopping" signal, and the connections that listen for it."""

    __slots__ = ("_connections", "started")

    def __init__(self) -> None:
        self._connections: set[WebSocket] = set()
        self.started = False

    def begin(self) -> None:
        """Cancel every watched connection; each closes with its shutdown code."""
        self.started = True
        for websocket in list(self._connections):
            websocket._shut_down()
        self._connections.clear()

    def watch(self, websocket: WebSocket) -> None:
        if self.started:
            websocket._shut_down()
        else:
            self._connections.add(websocket)

    def unwatch(self, websocket: WebSocket) -> None:
        self._connections.discard(websocket)

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
    if state is None:
        return None
    shutdown = state.get(STATE_KEY)
    return shutdown if isinstance(shutdown, ServerShutdown) else None


def announce_shutdown(
    app: Callable[..., Awaitable[None]],
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    shutdown: ServerShutdown,
) -> tuple[Callable[..., Awaitable[None]], Callable[[], Awaitable[None]] | None]:
    """Wrap an app and a shutdown trigger so that ``shutdown`` reaches every connection.

    Works on ASGI apps (``app(scope, receive, send)``) and on hypercorn's internal app
    wrappers (which take two more arguments) alike.
    """

    def with_state(scope: Any, *args: Any) -> Awaitable[None]:
        # Plain function returning the app's coroutine: no extra frame stays on the stack
        # for the life of every connection.
        if scope["type"] == "lifespan":
            scope.setdefault("state", {}).setdefault(STATE_KEY, shutdown)
        return app(scope, *args)

    with_state.__wrapped__ = app  # type: ignore[attr-defined]

    if shutdown_trigger is None:
        return with_state, None

    async def trigger() -> None:
        await shutdown_trigger()
        shutdown.begin()

    return with_state, trigger
