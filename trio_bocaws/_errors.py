"""Every exception trio_bocaws raises, in one place.

The tree::

    TrioBocawsError
    ├── RejectConnection            raise it to refuse a handshake (status, headers, body)
    ├── WebSocketDisconnect         the client went away    (also trio.BrokenResourceError)
    ├── UnexpectedMessageType       a text frame where bytes were expected, or the reverse
    │                               (also TypeError)
    ├── MessageValidationError      a message does not fit the route's typed messages
    │                               (also ValueError)
    └── WebSocketStateError         you used the socket out of order (also RuntimeError)
        └── WebSocketClosedError    you closed it, then used it (also trio.ClosedResourceError)

Trio separates a resource *you* closed (`trio.ClosedResourceError`) from one the *peer* broke
(`trio.BrokenResourceError`); the two leaves keep that distinction, so ``except
trio.BrokenResourceError`` around a send works the same on a WebSocket as on a Trio stream.
Bocadillo documented misuse as `RuntimeError`, so state errors are still caught by
``except RuntimeError``.
"""

from __future__ import annotations

import sys
from typing import Any

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "MessageValidationError",
    "RejectConnection",
    "TrioBocawsError",
    "UnexpectedMessageType",
    "WebSocketClosedError",
    "WebSocketDisconnect",
    "WebSocketStateError",
]


class TrioBocawsError(Exception):
    """Base class of every error raised by trio_bocaws."""


class RejectConnection(TrioBocawsError):
    """Raise this to refuse a connection: from an ``authenticate`` hook, or from a view
    before it accepts.

    The client's handshake fails with an HTTP response carrying ``status``, ``headers``
    and ``body``. Raised after the connection was accepted, it closes it with 1008
    (policy violation) instead.

    Args:
        status: An HTTP error status (401 to ask for credentials, 403 to refuse).
        body: The response body, ``str`` (sent as UTF-8 text) or ``bytes``.
        headers: Extra response headers, as pairs or a mapping
            (``{"www-authenticate": "Bearer"}``).
    """

    def __init__(self, status: int = 403, body: str | bytes = b"", headers: Any = None) -> None:
        super().__init__(status, body, headers)
        self.status = status
        self.body = body
        self.headers = headers

    def __str__(self) -> str:
        body = self.body.decode("utf-8", "replace") if isinstance(self.body, bytes) else self.body
        return f"connection refused with HTTP {self.status}" + (f": {body}" if body else "")


class WebSocketDisconnect(TrioBocawsError, trio.BrokenResourceError):
    """The client closed the connection, or it was lost.

    Raised by every ``receive*`` and ``send*`` once the client has gone, and by the
    ``async for`` loop when the close code is not one of ``caught_close_codes``.

    Attributes:
        code: The WebSocket close code the client sent: ``1005`` when its close frame had
            no code, ``1006`` when the connection dropped without a close frame.
        reason: The reason the client gave, ``""`` if none.
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        if self.reason:
            return f"WebSocket disconnected with code {self.code}: {self.reason}"
        return f"WebSocket disconnected with code {self.code}"


class UnexpectedMessageType(TrioBocawsError, TypeError):
    """A message arrived in a frame type the receive method does not take.

    For example, ``receive_text()`` got a binary frame. The message is consumed: it is not
    handed to the next ``receive``.

    Attributes:
        expected: ``"text"`` or ``"bytes"``.
        received: The frame type that arrived.
    """

    def __init__(self, expected: str, received: str) -> None:
        super().__init__(expected, received)
        self.expected = expected
        self.received = received

    def __str__(self) -> str:
        return (
            f"expected a {self.expected} message but the client sent a {self.received} "
            f"message; use receive_{self.received}() or receive_event() to accept it"
        )


class MessageValidationError(TrioBocawsError, ValueError):
    """A message did not fit the route's typed messages (an attrs class or a union of them).

    Raised by ``receive()`` (and ``async for``) on a route whose ``receive_type`` is typed.
    The message is consumed and the connection stays usable: catch it to answer the client
    and receive the next one. Escaping a view, it closes the connection with 1007
    (invalid payload) and a reason naming the first problem.

    Attributes:
        errors: The problems, as ``(path, message)`` pairs, such as
            ``("$.items[2].price", 'expected float, got "abc"')``. ``$`` is the message.
        raw: What the client sent: the decoded document, or the text or bytes that could
            not be decoded.
    """

    def __init__(self, errors: list[tuple[str, str]], raw: Any = None) -> None:
        super().__init__(errors, raw)
        self.errors = errors
        self.raw = raw

    def __str__(self) -> str:
        problems = "; ".join(f"{path}: {message}" for path, message in self.errors)
        return f"invalid message: {problems}"


class WebSocketStateError(TrioBocawsError, RuntimeError):
    """The WebSocket was used in a state that does not allow it.

    For example: sending before ``accept()`` with ``auto_accept=False``, or accepting twice.
    """


class WebSocketClosedError(WebSocketStateError, trio.ClosedResourceError):
    """The application closed (or rejected) the WebSocket, then used it again."""


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``, groups flattened (``[error]`` if it is no group)."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]
