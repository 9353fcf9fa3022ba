"""Replacements for hypercorn's HTTP/2 connection (``hypercorn.protocol.h2.H2Protocol``)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import h2.errors
import h2.events
import h2.exceptions
from h2.stream import StreamState

__all__ = ["create_stream", "handle_events"]

# The states of an h2 stream once the server's END_STREAM has been sent.
_RESPONSE_ENDED: Final = frozenset({StreamState.HALF_CLOSED_LOCAL, StreamState.CLOSED})


def handle_events(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``H2Protocol._handle_events``: DATA for a stream hypercorn has dropped is answered,
    not looked up.

    hypercorn forgets a stream once its response is complete (a refused WebSocket, a view
    that closed first, a 404), while the client may still be sending on it: RFC 9113
    allows DATA on a stream that is half-closed for the server. hypercorn looks the stream
    up with ``self.streams[stream_id]``, and the ``KeyError`` ended the connection, and
    with it the worker. Here such DATA is acknowledged (its bytes count against the
    connection's flow-control window, which would otherwise shrink for good) and the
    stream is reset with NO_ERROR: "stop sending, the response is complete" (RFC 9113,
    section 8.1). While the server's response is still going out, the DATA is only
    acknowledged, so that the reset cannot cut the response short.
    """

    def _handle_events(self: Any, events: list[Any]) -> Awaitable[None]:
        streams = self.streams
        for event in events:
            if type(event) is h2.events.DataReceived and event.stream_id not in streams:
                return in_order(self, events)
        return original(self, events)  # every DATA has its stream: the usual case

    async def in_order(self: Any, events: list[Any]) -> None:
        # A stream comes to exist while hypercorn handles its request's headers, which may
        # come in the same read as its DATA: look each DATA's stream up after the events
        # before it were handled.
        batch: list[Any] = []
        for event in events:
            if type(event) is h2.events.DataReceived and event.stream_id not in self.streams:
                if batch:
                    await original(self, batch)
                    batch = []
                if event.stream_id not in self.streams:
                    _drop(self, event)
                    continue
            batch.append(event)
        await original(self, batch)  # and flushes what _drop queued

    return _handle_events


def _drop(protocol: Any, event: Any) -> None:
    connection = protocol.connection
    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    stream = connection.streams.get(event.stream_id)
    if stream is None or stream.state_machine.state in _RESPONSE_ENDED:
        # h2 may consider the stream closed already (a reset crossed this DATA).
        with contextlib.suppress(h2.exceptions.ProtocolError):
            connection.reset_stream(event.stream_id, h2.errors.ErrorCodes.NO_ERROR)


def create_stream(original: Callable[[Any, Any], Awaitable[None]]) -> Callable[..., Any]:
    """``H2Protocol._create_stream`` (once per request): a request read after the
    connection closed makes a stream that is closed at once.

    hypercorn goes on handling what it has read after its connection closed (a write
    failed: the client is gone), and starts the request's application. When the close came
    first, the connection's send task has ended, and with it the release of every stream's
    buffer (``send_task`` in :mod:`._h2_websockets`): the new stream's sends waited for a
    task that was gone, and its application for ever (the fuzzer's "HTTP/2 CONNECT to
    /reject, then close" left its refusal waiting). Here such a stream is told the
    connection closed, as the streams it had were (the application sees the client gone),
    and its buffer is released. It stays in ``H2Protocol.streams``, where the rest of
    hypercorn's request handling looks it up.
    """
    from hypercorn.protocol.events import StreamClosed

    from ._h2_websockets import BoundedStreamBuffer

    def _create_stream(self: Any, request: Any) -> Awaitable[None]:
        if not self.closed:
            return original(self, request)  # the usual case: the connection is open
        return created_closed(self, request)

    async def created_closed(self: Any, request: Any) -> None:
        await original(self, request)
        stream_id = request.stream_id
        buffer = self.stream_buffers.get(stream_id)
        if isinstance(buffer, BoundedStreamBuffer):
            buffer.abandon()
        stream = self.streams.get(stream_id)
        if stream is not None:
            await stream.handle(StreamClosed(stream_id=stream_id))

    return _create_stream
