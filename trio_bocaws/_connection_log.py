"""The debug line per connection: who, which path, how it ended, after how long.

At DEBUG on the ``trio_bocaws.connections`` logger, an :class:`~trio_bocaws.App` logs one
line when a WebSocket connection ends, and one for each handshake it refuses::

    127.0.0.1:53422 /chat/lobby closed 1000 by client after 2.41 s
    127.0.0.1:53424 /chat/lobby closed 1011 by server after 0.02 s
    127.0.0.1:53426 /chat/lobby closed 1006 by client (connection lost) after 9.75 s
    127.0.0.1:53428 /chat/lobby refused 403 (origin)

The facts come from the connection's block (:class:`~trio_bocaws._lifetime.Lifetime`),
which reports the first close, by either side, to a :class:`ConnectionRecord` when one is
attached: the one the metrics keep (:class:`~trio_bocaws._metrics.ConnectionMetrics` is a
record), or, without metrics, one made only when the line is wanted. With the level off the
App asks the logger once per connection (:func:`wanted`) and keeps nothing: no clock read,
no object, nothing per message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import trio

from ._state import WebSocketState
from ._websocket import WebSocket, lifetime_of

__all__ = ["ConnectionRecord", "log_refusal", "logger", "wanted"]

logger: Final = logging.getLogger("trio_bocaws.connections")

# The cause of a refusal by the view (or its block), as the metrics' reason says it.
VIEW: Final = "view"


def wanted() -> bool:
    """Whether the line per connection is logged (the App asks once per connection)."""
    return logger.isEnabledFor(logging.DEBUG)


class ConnectionRecord:
    """What one connection's block learned about its end, from its route to its close:
    when it opened, the first close (which side, which code), a refusal, and the messages
    each way (counted here, for the metrics, only while a record is attached)."""

    __slots__ = ("close_code", "closed_by", "opened", "received", "refusal", "sent")

    def __init__(self) -> None:
        self.opened = trio.current_time()
        self.received = 0  # counted by the connection's Lifetime and Stream
        self.sent = 0
        self.closed_by: str | None = None
        self.close_code = 0
        self.refusal: tuple[int, str] | None = None  # the HTTP status and its cause

    def closed(self, side: str, code: int) -> None:
        """The first close: ``side`` (``"client"`` or ``"server"``) with ``code``."""
        if self.closed_by is None:
            self.closed_by, self.close_code = side, code

    def refused(self, status: int, cause: str = VIEW) -> None:
        """The handshake was refused with HTTP ``status``, by ``cause`` (the view, or
        ``"auth"``, the authenticate hook)."""
        if self.refusal is None:
            self.refusal = (status, cause)

    def attach(self, ws: WebSocket) -> None:
        """Have the connection's block report its messages and its close here."""
        lifetime = lifetime_of(ws)
        if lifetime is not None:
            lifetime.record = self

    def ended(self, ws: WebSocket) -> None:
        """The App is done with the connection: log its line, if wanted."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s %s after %.2f s",
                _peer(ws.scope),
                _path(ws.scope),
                self._outcome(ws.state),
                trio.current_time() - self.opened,
            )

    def _outcome(self, state: WebSocketState) -> str:
        code = self.close_code
        if self.closed_by is not None:
            lost = " (connection lost)" if code == 1006 else ""
            return f"closed {code} by {self.closed_by}{lost}"
        refusal = self.refusal
        if refusal is not None and state is WebSocketState.REJECTED:
            return f"refused {refusal[0]} ({refusal[1]})"
        if state is WebSocketState.REJECTED:
            return f"refused ({VIEW})"
        if state is WebSocketState.DISCONNECTED:
            return "left before the handshake was answered"
        # The close could not be sent within close_timeout (logged as a warning).
        return f"ended {state.value}, without a close"


def log_refusal(scope: Mapping[str, Any], status: int, cause: str) -> None:
    """The line of a handshake refused before any view ran (origin, route, capacity...)."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s %s refused %d (%s)", _peer(scope), _path(scope), status, cause)


def _peer(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    if not client:
        return "-"  # a Unix socket, or a server that does not say
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _path(scope: Mapping[str, Any]) -> str:
    # The path is percent-decoded: a client could put a line break in it, and a line
    # of its own making in the log.
    path = str(scope.get("path", "?"))
    return path if path.isprintable() else ascii(path)
