"""Answering a WebSocket's handshake: accept it, or refuse it with an HTTP response.

The :class:`~trio_bocaws.WebSocket` owns the state (:mod:`trio_bocaws._state`) and decides
whether an answer is allowed now; a :class:`Handshake` knows the rest, as wsproto's
``Handshake`` does for its connection: the ASGI messages that answer, checked against what
the client offered (subprotocol, headers, status), the server's ``websocket.connect`` event
to take before answering, and that one task answers, once. It holds nothing the
connection needs afterwards, so the WebSocket lets go of it once the handshake is over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from ._codecs import Event
from ._errors import WebSocketStateError
from ._refusal import Refusal, refusal_events
from ._validation import (
    HeadersLike,
    validate_accept_headers,
    validate_reject_status,
    validate_subprotocol,
)

__all__ = ["Handshake"]


class Handshake:
    """The answer to one WebSocket's handshake; see the module docstring.

    Args:
        scope: The connection's ASGI scope (the subprotocols offered, the server's
            extensions).
        receive: The ASGI ``receive`` callable.
        send: The ASGI ``send`` callable.
    """

    __slots__ = ("_answering", "_connect_taken", "_receive", "_scope", "_send")

    def __init__(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._answering: trio.Event | None = None
        self._connect_taken = False  # the "websocket.connect" event was received

    @property
    def answering(self) -> trio.Event | None:
        """While a task answers: an event set once it is done (another task's auto-accept
        waits for it instead of sending a second answer, which hypercorn refuses)."""
        return self._answering

    def acceptance(self, subprotocol: str | None, headers: HeadersLike | None) -> Event:
        """The ``websocket.accept`` message.

        Raises:
            ValueError: The client did not offer ``subprotocol``, or a header is invalid or
                is one the server sets itself.
        """
        offered = tuple(self._scope.get("subprotocols") or ())
        message: Event = {
            "type": "websocket.accept",
            "subprotocol": validate_subprotocol(subprotocol, offered),
        }
        extra = validate_accept_headers(headers)
        if extra:
            message["headers"] = extra
        return message

    def refusal(
        self, status: int, body: bytes | str, headers: HeadersLike | None
    ) -> list[dict[str, Any]]:
        """The messages that refuse the handshake with ``status`` (see
        :func:`~trio_bocaws._refusal.refusal_events`).

        Raises:
            ValueError: ``status`` is not a 4xx or 5xx status, or a header is invalid.
        """
        refusal = Refusal(validate_reject_status(status), body, headers)
        return refusal_events(self._scope, refusal)

    async def unanswered_connect(self) -> Event | None:
        """Take the ``websocket.connect`` event of a handshake that will not be answered
        (the client has gone): the events after it are then the client's.

        Returns:
            ``None`` once it is taken (or was); the event that came instead, if another.
        """
        if self._connect_taken or self._answering is not None:
            return None
        event: Event = await self._receive()
        self._connect_taken = True
        return None if event["type"] == "websocket.connect" else event

    async def answer(self, messages: Sequence[Event], what: str) -> Event | None:
        """Take the ``websocket.connect`` event, then send ``messages``.

        Returns:
            ``None`` once they were sent; the server's ``websocket.disconnect`` event
            instead if the client left before the handshake was answered.

        Raises:
            WebSocketStateError: Another task is answering (``what`` names this answer).
            OSError: The server refused a send (ASGI 2.4: the client has gone).
        """
        if self._answering is not None:
            raise WebSocketStateError(f"cannot {what}: another task is answering the handshake")
        self._answering = answering = trio.Event()
        try:
            if not self._connect_taken:
                event: Event = await self._receive()
                self._connect_taken = True
                if event["type"] != "websocket.connect":
                    return event
            for message in messages:
                await self._send(message)
            return None
        finally:
            self._answering = None
            answering.set()
