"""Replacements for hypercorn's HTTP/2 code, for WebSockets over HTTP/2 (RFC 8441).

Each function here takes hypercorn's original and returns its replacement, for one record
of :data:`trio_bocaws._hypercorn.PATCHES`; none touches HTTP/1.1's per-message path. Each
was written for hypercorn 0.18.0 and checked against 0.17.3 (``protocol/h2.py``,
``h11.py``, ``ws_stream.py`` and ``__init__.py`` differ only in type hints and comments
where these apply).

1. :class:`BoundedStreamBuffer` (for ``hypercorn.protocol.h2.StreamBuffer``): what a stream
   sends waits while two frames are buffered, however the flow-control window moves.
2. :func:`send_data` (``H2Protocol._send_data``) and :func:`watch_stalled_streams`: a
   stream whose flow-control window stays shut with data waiting for longer than the write
   timeout is reset (RST_STREAM, CANCEL), and its application told the client is gone.
3. :func:`send_task` (``H2Protocol.send_task``): when the connection stops sending, every
   send still waiting on a stream returns at once.
4. :func:`close_stream` (``H2Protocol._close_stream``): a WebSocket stream that ends is
   ended on the server's side too (END_STREAM), so it stops counting against the
   connection's stream limit.
5. :func:`websocket_idle` (``WSStream.idle``): a WebSocket stream holds its HTTP/2
   connection open until the stream has ended, so its close frame goes out before GOAWAY.
6. :func:`check_protocol` (``H11Protocol._check_protocol``) and :func:`h2_protocol`
   (``hypercorn.protocol.H2Protocol``): a server whose ALPN list lacks ``h2`` (trio_bocaws's
   ``ServerConfig(http2=False)``) speaks HTTP/1.1 only, on the plain port too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import h2.exceptions
import trio
from hypercorn.protocol.h2 import BUFFER_HIGH_WATER, BufferCompleteError, StreamBuffer
from priority.priority import MissingStreamError

from .._stream_status import StreamClosedError
from ._worker import current_options

__all__ = [
    "BoundedStreamBuffer",
    "bounded_stream_buffer",
    "check_protocol",
    "close_stream",
    "h2_protocol",
    "send_data",
    "send_task",
    "watch_stalled_streams",
    "websocket_idle",
]

# Per connection (an H2Protocol instance): stream id -> when its window shut with data
# waiting, and the cancel scope of the task that watches them, while it runs.
_STALLS: Final = "_trio_bocaws_stalls"
_WATCHER: Final = "_trio_bocaws_watcher"

_VERSION_NOT_SUPPORTED: Final = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
)


def _write_timeout() -> float | None:
    """The write timeout of the worker serving this connection."""
    return current_options().write_timeout


class BoundedStreamBuffer(StreamBuffer):
    """Replaces ``hypercorn.protocol.h2.StreamBuffer``, what each HTTP/2 stream sends
    through.

    Why: hypercorn's ``push`` waits for one "room again" signal that ``pop`` also gives
    when it pops nothing, as it does each time it finds the stream's window shut. A
    client that stops reading one stream (and keeps its connection flowing) therefore
    never holds the sender back: the buffer grows with everything the application sends
    (about 220 MB in 2 s of 4 KiB sends, measured), and the send never blocks, so no
    timeout could notice it. Here ``push`` waits while two frames' worth is buffered,
    whatever ``pop`` signalled, and :meth:`abandon` releases every waiter at once.

    The waiters park in a :class:`trio.lowlevel.ParkingLot`, not on hypercorn's
    ``_paused`` event: its trio ``clear()`` replaces the event, so with several tasks
    sending on one stream, one that cleared it after waking left another waiting on the
    replaced event, which nobody sets again (8 tasks x 8 messages of up to 2 KiB stalled
    one WebSocket for ever; tests/test_http2.py, concurrent senders). hypercorn's own
    buffer has the same fault, with larger messages (measured: 8 tasks x 8 messages of up
    to 16 KiB stall without trio_bocaws's fixes, and pass with an ``EventWrapper.clear``
    that keeps an unset event).
    No upstream issue found. Checked against hypercorn 0.17.3 and 0.18.0 (``StreamBuffer``
    in ``protocol/h2.py``, identical in both).
    """

    def __init__(self, event_class: Any) -> None:
        super().__init__(event_class)
        self._room = trio.lowlevel.ParkingLot()

    async def push(self, data: bytes) -> None:
        if self._complete:
            # The stream was reset, or its connection stopped sending: hypercorn drops the
            # data without a checkpoint. Yield first, so that a view looping on sends lets
            # the task that tells it the stream ended run (it spun at 100% CPU before).
            await trio.lowlevel.checkpoint()
            raise BufferCompleteError()
        self.buffer.extend(data)
        await self._is_empty.clear()
        while len(self.buffer) >= BUFFER_HIGH_WATER and not self._complete:
            await self._room.park()

    async def pop(self, max_length: int) -> bytes:
        data = bytes(self.buffer[:max_length])
        del self.buffer[:max_length]
        if data and len(self.buffer) < BUFFER_HIGH_WATER:
            self._room.unpark_all()  # each rechecks the buffer, and may park again
        if not self.buffer:
            await self._is_empty.set()
        return data

    async def close(self) -> None:
        await super().close()  # hypercorn's, when the stream's send failed: drop the rest
        self._room.unpark_all()

    def abandon(self) -> None:
        """Drop what is buffered and release every waiting ``push`` and ``drain``, without
        a checkpoint (for a connection that has stopped sending, cancelled or not)."""
        self._complete = True
        self.buffer = bytearray()
        # hypercorn's trio EventWrapper; its set() is a coroutine only in name.
        self._room.unpark_all()
        inner = getattr(self._is_empty, "_event", None)
        if inner is not None:
            inner.set()


def send_data(original: Callable[[Any, int], Awaitable[None]]) -> Callable[..., Any]:
    """Replaces ``H2Protocol._send_data`` (the connection's send task, once per frame).

    Why: on HTTP/2 a client can stop reading one stream (no WINDOW_UPDATE for it) while the
    TCP connection flows on for the others, so ``TCP_USER_TIMEOUT`` (the write timeout on
    HTTP/1.1) never fires and the stream's sender waits forever. This notes when a stream's
    window is found shut with data waiting, and when it opens again, then runs hypercorn's
    own; :func:`watch_stalled_streams` resets a stream that stays shut longer than the
    write timeout. No upstream issue found. Checked against hypercorn 0.17.3 and 0.18.0.
    """

    def _send_data(self: Any, stream_id: int) -> Awaitable[None]:
        stalls: dict[int, float] | None = getattr(self, _STALLS, None)
        buffer = self.stream_buffers.get(stream_id)
        shut = False
        if buffer is not None and buffer.buffer:
            try:
                shut = self.connection.local_flow_control_window(stream_id) <= 0
            except h2.exceptions.H2Error:  # the stream is gone; hypercorn's own cleans up
                shut = False
        if shut:
            if stalls is None:
                stalls = {}
                setattr(self, _STALLS, stalls)
            if stream_id not in stalls:
                stalls[stream_id] = trio.current_time()
                if getattr(self, _WATCHER, None) is None and _write_timeout():
                    setattr(self, _WATCHER, trio.CancelScope())
                    self.task_group.spawn(watch_stalled_streams, self)
        elif stalls:
            stalls.pop(stream_id, None)
        # The coroutine itself, not awaited here: no extra frame per DATA frame.
        return original(self, stream_id)

    return _send_data


async def watch_stalled_streams(protocol: Any) -> None:
    """Reset every stream of ``protocol`` (an ``H2Protocol``) whose window has stayed shut,
    with data waiting, for the write timeout; one task per connection, while any is shut.

    The reset stream's application receives ``websocket.disconnect`` (1006) and its
    blocked send returns; the client sees RST_STREAM with CANCEL. Other streams go on.
    :func:`send_task` cancels this task when the connection stops sending, so that it never
    keeps a closed connection's tasks waiting.
    """
    from hypercorn.protocol.events import StreamClosed

    timeout = _write_timeout()
    stalls: dict[int, float] = getattr(protocol, _STALLS)
    try:
        with getattr(protocol, _WATCHER):
            while stalls and timeout is not None and not protocol.closed:
                stream_id, since = min(stalls.items(), key=lambda item: item[1])
                if trio.current_time() < since + timeout:
                    await trio.sleep_until(since + timeout)
                    continue
                del stalls[stream_id]
                if await _reset(protocol, stream_id):
                    # Tells the application, and closes the connection if this was the last
                    # stream of a server that is shutting down, as the end of any stream does.
                    await protocol.stream_send(StreamClosed(stream_id=stream_id))
    finally:
        setattr(protocol, _WATCHER, None)


async def _reset(protocol: Any, stream_id: int) -> bool:
    """Reset a stream (CANCEL) and release its sender; ``False`` if it had ended already."""
    import h2.errors

    try:
        protocol.connection.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
    except h2.exceptions.H2Error:  # the stream has ended meanwhile: nothing to reset
        return False
    buffer = protocol.stream_buffers.get(stream_id)
    if isinstance(buffer, BoundedStreamBuffer):
        buffer.abandon()  # its sender returns now; the send task forgets the buffer
    await protocol._flush()
    await protocol._window_updated(stream_id)
    return True


def send_task(original: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """Replaces ``H2Protocol.send_task`` (one per connection): hypercorn's, then, however it
    ends (the connection closed, or the graceful timeout cancelled it), every stream buffer
    is abandoned and the task of :func:`watch_stalled_streams` cancelled.

    Why: a stream's send waits for this task to take its data (``push`` at the high water
    mark, ``drain`` for the end of the stream). Once the task has ended nobody does, so an
    application closing its WebSocket (a shielded close, with its own timeout) waited out
    that whole timeout: a shutdown took 5.2 s against a ``graceful_timeout`` of 3. No
    upstream issue found. Checked against hypercorn 0.17.3 and 0.18.0.
    """

    async def _send_task(self: Any) -> None:
        try:
            await original(self)
        finally:
            for buffer in list(self.stream_buffers.values()):
                if isinstance(buffer, BoundedStreamBuffer):
                    buffer.abandon()
            watcher = getattr(self, _WATCHER, None)
            if watcher is not None:
                watcher.cancel()

    return _send_task


def stream_send(original: Callable[[Any, Any], Awaitable[None]]) -> Callable[..., Any]:
    """Replaces ``H2Protocol.stream_send`` (every event a stream sends; for DATA, one dict
    lookup more).

    Why: DATA for a stream whose buffer is gone (the stream was reset by the client or by
    the write timeout, and the send task has forgotten it) raises ``KeyError`` inside,
    which hypercorn swallows: the message vanishes and the send returns without a
    checkpoint. A view that only sends then spins at 100% CPU, and the task that would
    tell it the stream ended never runs. Here such a send raises ``StreamClosedError``
    (an ``OSError``, as ASGI 2.4 allows), after a checkpoint, and the WebSocket turns it
    into ``WebSocketDisconnect``. No upstream issue found. Checked against hypercorn
    0.17.3 and 0.18.0.
    """
    from hypercorn.protocol.events import Data

    def _stream_send(self: Any, event: Any) -> Awaitable[None]:
        if type(event) is Data and event.stream_id not in self.stream_buffers:
            return _gone(event.stream_id)
        return original(self, event)

    return _stream_send


async def _gone(stream_id: int) -> None:
    await trio.lowlevel.checkpoint()
    raise StreamClosedError(f"cannot send on HTTP/2 stream {stream_id}: it has ended")


def close_stream(original: Callable[[Any, int], Awaitable[None]]) -> Callable[..., Any]:
    """Replaces ``H2Protocol._close_stream`` (once per stream, when it ends).

    Why: when a WebSocket stream ends other than by the application's ``websocket.close``
    (the client closed first, a message over the size limit, the application returned
    without closing), hypercorn sends the last close frame but never ends its half of the
    stream (no END_STREAM). The stream stays open in HTTP/2's eyes and counts against
    ``SETTINGS_MAX_CONCURRENT_STREAMS``: after 100 WebSockets closed by the client, a
    connection (a browser keeps one per site) could open no more. Here the stream's buffer
    is marked complete, so the send task sends what is left and then END_STREAM, as it
    does after ``websocket.close``. No upstream issue found. Checked against hypercorn
    0.17.3 and 0.18.0.
    """
    from hypercorn.protocol.ws_stream import WSStream

    def _close_stream(self: Any, stream_id: int) -> Awaitable[None]:
        buffer = self.stream_buffers.get(stream_id)
        if (
            buffer is not None
            and not buffer._complete
            and isinstance(self.streams.get(stream_id), WSStream)
        ):
            buffer.set_complete()
            with contextlib.suppress(MissingStreamError):  # it never had data
                self.priority.unblock(stream_id)
        return original(self, stream_id)  # wakes the send task

    # The record "HTTP/2 GOAWAY after the clients' last frames" wraps this one and checks
    # hypercorn's code through it (inspect.unwrap).
    _close_stream.__wrapped__ = original  # type: ignore[attr-defined]
    return _close_stream


def websocket_idle(original: property) -> property:
    """Replaces the ``WSStream.idle`` property (read only by ``H2Protocol``).

    Why: hypercorn counts a WebSocket stream as idle as soon as its application has sent
    ``websocket.close``, before the close frame has left the stream's buffer. When another
    stream of the same connection then ends during a shutdown, the connection is taken as
    idle and shut (GOAWAY, then TCP close) with those close frames still buffered: 1 or 2
    of 3 clients sharing a connection saw 1006 instead of 1001. A WebSocket stream is idle
    here only once it has ended (or was refused). No upstream issue found. Checked against
    hypercorn 0.17.3 and 0.18.0.
    """

    def idle(self: Any) -> bool:
        return bool(self.closed)

    return property(idle)


def check_protocol(original: Callable[[Any, Any], Awaitable[None]]) -> Callable[..., Any]:
    """Replaces ``H11Protocol._check_protocol`` (once per HTTP/1.1 request, not per
    message).

    Why: hypercorn takes up HTTP/2 on the plain port whatever its ALPN list says, for a
    client that opens with the HTTP/2 preface or asks ``Upgrade: h2c``. When ``h2`` is not
    among ``config.alpn_protocols`` (``ServerConfig(http2=False)``), the upgrade is
    ignored (RFC 9110 lets a server ignore it) and the preface is refused by
    :func:`h2_protocol`. Checked against hypercorn 0.17.3 and 0.18.0.
    """

    def _check_protocol(self: Any, event: Any) -> Awaitable[None]:
        if "h2" not in self.config.alpn_protocols:
            for name, value in event.headers:
                if name.lower() == b"upgrade" and value.strip().lower() == b"h2c":
                    return trio.lowlevel.checkpoint()  # noqa: ASYNC105 (awaited by hypercorn)
        return original(self, event)

    return _check_protocol


class _RefusedHTTP2:
    """Stands for HTTP/2 on a server that does not speak it: answers the client's preface
    with HTTP/1.1's 505, then closes the connection."""

    def __init__(self, send: Any) -> None:
        self.send = send

    async def initiate(self, *args: Any) -> None:
        from hypercorn.events import Closed, RawData

        await self.send(RawData(data=_VERSION_NOT_SUPPORTED))
        await self.send(Closed())

    async def handle(self, event: Any) -> None:
        await trio.lowlevel.checkpoint()


def h2_protocol(original: Callable[..., Any]) -> Callable[..., Any]:
    """Replaces the name ``H2Protocol`` in ``hypercorn.protocol`` (what ``ProtocolWrapper``
    builds when ALPN picked ``h2`` or a client opened with the HTTP/2 preface).

    Why: see :func:`check_protocol`. When ``h2`` is not among ``config.alpn_protocols``, a
    client's HTTP/2 preface gets 505 and the connection is closed, as a server that only
    knows HTTP/1.1 would answer ``PRI * HTTP/2.0``. ``ProtocolWrapper`` calls it with
    hypercorn's positional arguments (app, config, context, task group, state, ssl,
    client, server, send). Checked against hypercorn 0.17.3 and 0.18.0.
    """

    def H2Protocol(*args: Any) -> Any:  # named as what it stands for
        config, send = args[1], args[8]
        if "h2" not in config.alpn_protocols:
            return _RefusedHTTP2(send)
        return original(*args)

    return H2Protocol


def bounded_stream_buffer(original: type) -> type:
    """``hypercorn.protocol.h2.StreamBuffer``: see :class:`BoundedStreamBuffer`."""
    return BoundedStreamBuffer
