"""What one WebSocket connection has done so far: :meth:`WebSocket.statistics`."""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["WebSocketStatistics"]


@attrs.frozen(kw_only=True)
class WebSocketStatistics:
    """A snapshot of one connection's traffic and ending.

    Attributes:
        messages_received: Data messages received from the client (``receive*()``
            calls that returned one).
        messages_sent: Data messages handed to the ASGI server to send.
        closed_by: Which side closed first: ``"client"`` (its close frame, or the
            connection lost: code 1006), ``"server"`` (a close frame sent by the
            application or its block), or ``None`` while open or if the handshake was
            never accepted.
        close_code: The close code of the side that closed first, or ``None``.
    """

    messages_received: int
    messages_sent: int
    closed_by: Literal["client", "server"] | None
    close_code: int | None
