"""Replacements for hypercorn's WebSocket stream (``hypercorn.protocol.ws_stream``).

Each function here takes hypercorn's original and returns its replacement (see
:class:`~trio_bocaws._hypercorn._patch.Patch`). The replacements of methods that every
message passes through are plain functions returning the coroutine to await (hypercorn's
own, most of the time), not coroutines awaiting it: an extra coroutine frame per message
would cost more than the checks themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final

import trio
from hypercorn.protocol.events import Body, Data, StreamClosed
from hypercorn.protocol.ws_stream import (
    ASGIWebsocketState,
    FrameTooLargeError,
    WSStream,
)
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event, TextMessage
from wsproto.frame_protocol import CloseReason

from .._stream_status import EXTENSION, StreamClosedError, StreamStatus

__all__ = [
    "answering_connection",
    "app_send",
    "extend",
    "handle",
    "send_pings",
    "send_wsproto_event",
    "spawn_app",
]

# Where each WSStream keeps its StreamStatus (also in its scope's extensions), and the
# cancel scope of its ping task.
STATUS_ATTRIBUTE: Final = "_trio_bocaws_status"
PINGS_ATTRIBUTE: Final = "_trio_bocaws_pings"
# Set once the app has begun to answer the handshake (an accept, a refusal or hypercorn's
# 500 after it): from then on, the stream's one HTTP response is the app's.
ANSWERED_ATTRIBUTE: Final = "_trio_bocaws_answered"

_HANDSHAKE: Final = ASGIWebsocketState.HANDSHAKE
_CONNECTED: Final = ASGIWebsocketState.CONNECTED
# The messages with which the app answers a handshake with an HTTP response (a
# websocket.http.response.start only stores the status; the body sends it).
_ANSWERS: Final = frozenset(
    {"websocket.accept", "websocket.close", "websocket.http.response.body"}
)
_APP_CLOSED: Final = (ASGIWebsocketState.CLOSED, ASGIWebsocketState.HTTPCLOSED)
_OPEN: Final = ConnectionState.OPEN
_TOO_BIG: Final = CloseReason.MESSAGE_TOO_BIG


def close_code(stream: Any) -> int | None:
    """The close code the stream's status holds, if any."""
    status = getattr(stream, STATUS_ATTRIBUTE, None)
    close = None if status is None else status.close
    return None if close is None else close[0]


def spawn_app(original: Callable[..., Any]) -> Callable[..., Any]:
    """``TaskGroup.spawn_app``: give every WebSocket scope its StreamStatus."""

    def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
        # The one moment where a WebSocket's scope exists and its app task does not run
        # yet. hypercorn passes the stream's own app_send, which names the stream.
        stream = getattr(send, "__self__", None)
        if isinstance(stream, WSStream):
            status = StreamStatus()
            scope["extensions"][EXTENSION] = status
            setattr(stream, STATUS_ATTRIBUTE, status)
        return original(self, app, config, scope, send)

    return spawn_app


def send_wsproto_event(original: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    """``WSStream._send_wsproto_event``: record the close the app will be told."""

    def _send_wsproto_event(self: Any, event: Any) -> Awaitable[None]:
        # While the app has not closed, any close hypercorn sends is the echo of the
        # client's close (same code and reason), its own 1009 for an oversized message, or
        # wsproto's answer to a bad frame: the code the app should be told, before the
        # echo goes out.
        if type(event) is CloseConnection and self.state == _CONNECTED:
            status = getattr(self, STATUS_ATTRIBUTE, None)
            if status is not None and status.close is None:
                status.close = (int(event.code), event.reason or "")
        return original(self, event)

    return _send_wsproto_event


async def _answer_early_bytes(stream: Any) -> None:
    # The 400 hypercorn answers bytes sent before the handshake's answer with, but claimed
    # before it goes out: hypercorn marks the stream closed only once the 400 is sent, and
    # an accept or a refusal the app sends meanwhile was a second response on the same
    # request (h11 raises, and both sides log an ERROR). Now the app's send raises
    # StreamClosedError, which the core reports as a disconnect.
    setattr(stream, ANSWERED_ATTRIBUTE, True)
    stream.closed = True
    await stream._send_error_response(400)


async def _drop() -> None:
    await trio.lowlevel.checkpoint()


def handle(original: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    """``WSStream.handle``: report the recorded close, read on past an oversized message,
    end the ping task with the stream, and give bytes sent before the handshake's answer
    one answer only."""

    async def handle_then_drain(self: Any, event: Any) -> None:
        await original(self, event)
        if self.closed or close_code(self) != _TOO_BIG:
            return
        # hypercorn stops reading events at an oversized message and drops what came
        # after it in the same read: the client's answer to the 1009, above all. Without
        # it the stream never closes and the app waits in receive() for ever.
        for follow in self.connection.events():
            if isinstance(follow, CloseConnection):
                await self.send(StreamClosed(stream_id=self.stream_id))
                return

    def handle(self: Any, event: Any) -> Awaitable[None]:
        if type(event) is Data or type(event) is Body:  # over HTTP/1.1 or HTTP/2
            if self.state == _CONNECTED and (
                self.buffer.length + len(event.data) > self.buffer.max_length
                or self.connection.state is not _OPEN
            ):
                # Only where a message may be too big, or was (hypercorn then closed
                # with 1009): one more coroutine otherwise.
                return handle_then_drain(self, event)
            if not self.closed and not self.handshake.accepted:
                # The client did not wait for the handshake's answer (RFC 6455, 4.1). The
                # first answer wins: a 400 if the app has not begun its own, else the
                # app's, and these bytes (after a refusal, or racing it) are dropped.
                if self.state is _HANDSHAKE and not getattr(self, ANSWERED_ATTRIBUTE, False):
                    return _answer_early_bytes(self)
                return _drop()
        elif type(event) is StreamClosed:
            pings = getattr(self, PINGS_ATTRIBUTE, None)
            if pings is not None:
                pings.cancel()
            status = getattr(self, STATUS_ATTRIBUTE, None)
            if (
                status is not None
                and not self.closed
                and self.app_put is not None
                and self.state not in _APP_CLOSED  # hypercorn reports 1000 for those
            ):
                if status.close is None:
                    status.close = (CloseReason.ABNORMAL_CLOSURE.value, "")  # no close frame
                elif self.state == _CONNECTED:
                    self.closed = True
                    code, reason = status.close
                    return self.app_put(  # type: ignore[no-any-return]
                        {"type": "websocket.disconnect", "code": code, "reason": reason}
                    )
        return original(self, event)

    return handle


async def _refuse(message: Any) -> None:
    await trio.lowlevel.checkpoint()
    kind = message["type"]
    raise StreamClosedError(f"cannot send {kind!r}: the WebSocket connection has closed")


def app_send(original: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    """``WSStream.app_send``: a message on a closed stream raises instead of vanishing,
    and the app's answer to the handshake is claimed before it goes out."""

    def app_send(self: Any, message: Any) -> Awaitable[None]:
        if (
            self.state is _HANDSHAKE
            and not self.closed
            and (message is None or message["type"] in _ANSWERS)
        ):
            # The response is sent across checkpoints, and hypercorn moves the state on
            # only after (a rejection's body) or not at all (the 500 for an app that
            # ended without answering): bytes the client sends meanwhile must
            # not start a 400 on the same request (see handle).
            setattr(self, ANSWERED_ATTRIBUTE, True)
        if message is not None and (
            self.closed
            or (
                message["type"] == "websocket.send"
                and self.state == _CONNECTED
                and self.connection.state is not _OPEN
            )
        ):
            # hypercorn would drop it and return without yielding, so a loop that only
            # sends would spin; ASGI 2.4 lets a server raise an OSError instead.
            return _refuse(message)
        return original(self, message)

    return app_send


def send_pings(original: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    """``WSStream._send_pings``: cancellable, so that it ends with the stream."""

    async def _send_pings(self: Any) -> None:
        with trio.CancelScope() as scope:
            setattr(self, PINGS_ATTRIBUTE, scope)
            await original(self)

    return _send_pings


def answering_connection(original: type[Connection]) -> type[Connection]:
    """``ws_stream.Connection``: a wsproto connection whose own failures (a bad frame)
    hypercorn answers with a close frame, as it answers the client's closes."""

    class AnsweringConnection(original):  # type: ignore[valid-type,misc]
        def events(self) -> Generator[Event, None, None]:
            for event in super().events():
                if type(event) is CloseConnection and self.state is _OPEN:
                    # wsproto failed the connection (a close the client sent moves the
                    # state on first). Treated as the client's close, hypercorn answers it
                    # with a close frame of the same code and reason, then ends the stream.
                    self._state = ConnectionState.REMOTE_CLOSING
                yield event

    AnsweringConnection.__name__ = AnsweringConnection.__qualname__ = "AnsweringConnection"
    return AnsweringConnection


def extend(original: Callable[..., None]) -> Callable[..., None]:
    """``WebsocketBuffer.extend``: count a text message's size in UTF-8 bytes, as the
    limit is documented, not in characters."""

    def extend(self: Any, event: Any) -> None:
        data = event.data
        if type(event) is TextMessage and not data.isascii():
            original(self, event)
            # hypercorn added len(data) characters; count the bytes instead.
            self.length += len(data.encode()) - len(data)
            if self.length > self.max_length:
                raise FrameTooLargeError()
            return
        original(self, event)

    return extend
