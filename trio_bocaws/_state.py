"""The WebSocket's state machine: five states, six transitions, one table.

Plain and synchronous, like wsproto's ``ConnectionState`` and h11's ``_state.py``: the
async methods of :class:`~trio_bocaws.WebSocket` ask :func:`next_state` before they await
the server, and store what it returns. Nothing here awaits, reads a clock or holds a
connection; the table is the whole truth about what may happen in which state.

========================  ============  ============  ============  ============  ============
state \\ transition        ACCEPT        REJECT        SEND /        CLOSE         PEER_CLOSE
                                                      RECEIVE
========================  ============  ============  ============  ============  ============
CONNECTING                CONNECTED     REJECTED      (error)       (error)       DISCONNECTED
CONNECTED                 (error)       (error)       CONNECTED     CLOSED        DISCONNECTED
REJECTED                  (error)       (error)       (error)       (error)       REJECTED
CLOSED                    (error)       (error)       (error)       (error)       CLOSED
DISCONNECTED              (disconnect)  (disconnect)  (disconnect)  (disconnect)  DISCONNECTED
========================  ============  ============  ============  ============  ============

``CLOSE`` is taken once the application's close frame went out, not when ``close()`` is
called: a close cancelled before its frame was sent leaves the connection ``CONNECTED``,
so the next close still sends one. ``PEER_CLOSE`` is the client's close (or the loss of
the connection), learned from the server's stream status, a failed send or the
``websocket.disconnect`` event; after the application's own close or refusal it changes
nothing. Every illegal transition raises an error that names it: a
:class:`~trio_bocaws.WebSocketDisconnect` once the client has gone, a
:class:`~trio_bocaws.WebSocketClosedError` once the application closed or refused the
connection, else a :class:`~trio_bocaws.WebSocketStateError`.
"""

from __future__ import annotations

import enum
from typing import Final

from ._errors import WebSocketClosedError, WebSocketDisconnect, WebSocketStateError

__all__ = ["Transition", "WebSocketState", "next_state"]


class WebSocketState(enum.Enum):
    """Where a connection is in its life. Read it from :attr:`WebSocket.state`."""

    CONNECTING = "connecting"
    """The handshake has not been answered yet."""
    CONNECTED = "connected"
    """The handshake was accepted; messages flow both ways."""
    REJECTED = "rejected"
    """The application refused the handshake."""
    CLOSED = "closed"
    """The application sent a close frame."""
    DISCONNECTED = "disconnected"
    """The client closed the connection or it was lost."""


class Transition(enum.Enum):
    """What can happen to a connection; the value is the verb an error message uses."""

    ACCEPT = "accept"
    REJECT = "reject"
    SEND = "send"
    RECEIVE = "receive"
    CLOSE = "close"
    PEER_CLOSE = "be closed by the client"


_S = WebSocketState
_T = Transition

_TABLE: Final[dict[tuple[WebSocketState, Transition], WebSocketState]] = {
    (_S.CONNECTING, _T.ACCEPT): _S.CONNECTED,
    (_S.CONNECTING, _T.REJECT): _S.REJECTED,
    (_S.CONNECTING, _T.PEER_CLOSE): _S.DISCONNECTED,
    (_S.CONNECTED, _T.SEND): _S.CONNECTED,
    (_S.CONNECTED, _T.RECEIVE): _S.CONNECTED,
    (_S.CONNECTED, _T.CLOSE): _S.CLOSED,
    (_S.CONNECTED, _T.PEER_CLOSE): _S.DISCONNECTED,
    (_S.REJECTED, _T.PEER_CLOSE): _S.REJECTED,
    (_S.CLOSED, _T.PEER_CLOSE): _S.CLOSED,
    (_S.DISCONNECTED, _T.PEER_CLOSE): _S.DISCONNECTED,
}

# Why a transition is refused, where one sentence helps more than the states' names.
_ACCEPT_FIRST: Final = (
    "before the connection is accepted: call accept() first (or use auto_accept=True)"
)
_MESSAGES: Final[dict[tuple[WebSocketState, Transition], str]] = {
    (_S.CONNECTING, _T.SEND): f"cannot send {_ACCEPT_FIRST}",
    (_S.CONNECTING, _T.RECEIVE): f"cannot receive {_ACCEPT_FIRST}",
    (_S.CONNECTING, _T.CLOSE): f"cannot close {_ACCEPT_FIRST}, or refuse it with reject()",
    (_S.CONNECTED, _T.ACCEPT): "cannot accept: the WebSocket was already accepted",
    (_S.CONNECTED, _T.REJECT): "cannot reject: the WebSocket was already accepted",
}


def next_state(
    state: WebSocketState,
    transition: Transition,
    peer_close: tuple[int, str] | None = None,
) -> WebSocketState:
    """The state after ``transition``, or the error that refuses it.

    Args:
        state: The current state.
        transition: What is about to happen.
        peer_close: The client's close code and reason, for the error raised once it has
            gone (1006 if unknown).

    Raises:
        WebSocketDisconnect: The client has gone (``state`` is ``DISCONNECTED``).
        WebSocketClosedError: The application closed or rejected the connection.
        WebSocketStateError: Any other transition the table does not allow.
    """
    found = _TABLE.get((state, transition))
    if found is not None:
        return found
    if state is _S.DISCONNECTED:
        code, reason = peer_close or (1006, "")
        raise WebSocketDisconnect(code, reason)
    verb = transition.value
    if state is _S.CLOSED or state is _S.REJECTED:
        raise WebSocketClosedError(
            f"cannot {verb}: the WebSocket was already {state.value} by the application"
        )
    raise WebSocketStateError(_MESSAGES[state, transition])
