"""What the server tells a WebSocket about its stream, beyond ASGI's events.

ASGI reports a client's close only as the ``websocket.disconnect`` event, which waits in the
receive queue behind every message not yet read: an application that only sends learns
nothing, and one that has not read yet still believes the connection open. ASGI 2.4 lets a
server raise an :class:`OSError` for a send on a closed connection, but says nothing of the
client's close code.

trio_bocaws's hypercorn adapter closes that gap through an ASGI scope extension:

- ``scope["extensions"][EXTENSION]`` is a :class:`StreamStatus`, whose ``close`` the server
  sets to the client's ``(code, reason)`` the moment it has processed the client's close
  frame (1006 for a lost connection, 1009 for an oversized message), before the app reads
  the disconnect event;
- a ``websocket.send`` (or any other message but the final ``None``) on a stream that has
  closed raises :class:`StreamClosedError`, an :class:`OSError`, at once.

The WebSocket core reads both through this module only; any server may offer them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["EXTENSION", "StreamClosedError", "StreamStatus", "stream_status_of"]

EXTENSION: Final = "trio_bocaws.stream_status"
"""The key of a :class:`StreamStatus` in ``scope["extensions"]``."""


class StreamStatus:
    """How a WebSocket stream ended, as far as the server knows."""

    __slots__ = ("close",)

    def __init__(self) -> None:
        self.close: tuple[int, str] | None = None
        """The client's close code and reason once the server processed the end of the
        stream (``None`` while it is open, or when the application closed first)."""

    def __repr__(self) -> str:
        return f"<StreamStatus close={self.close!r}>"


class StreamClosedError(OSError):
    """What the server raises for a message sent on a WebSocket stream that has closed
    (ASGI 2.4's "server-specific subclass of OSError")."""


def stream_status_of(scope: Mapping[str, Any]) -> StreamStatus | None:
    """The server's :class:`StreamStatus` for this connection, if it offers one."""
    extensions = scope.get("extensions")
    if not extensions:
        return None
    status = extensions.get(EXTENSION)
    return status if isinstance(status, StreamStatus) else None
