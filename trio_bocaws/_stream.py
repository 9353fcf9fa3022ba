"""A WebSocket's state and its ASGI stream: the base of :class:`~trio_bocaws.WebSocket`.

:class:`Stream` keeps the state (:mod:`trio_bocaws._state`) true to what the server says:
its stream status (:mod:`trio_bocaws._stream_status`), a failed send (ASGI 2.4), the
``websocket.disconnect`` event. It receives events in order (through the fallback
:class:`~trio_bocaws._reader.Reader` on a server that does not report closes) and sends
messages, turning the client's close into :class:`~trio_bocaws.WebSocketDisconnect`. What
may happen before a receive or a send (answering the handshake first, say) is the
WebSocket's: ``Stream._before_receive`` and ``Stream._before_send``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from ._codecs import Event
from ._config import WebSocketConfig
from ._connection import Connection
from ._errors import WebSocketDisconnect, WebSocketStateError
from ._lifetime import Lifetime
from ._reader import Reader
from ._state import Transition, WebSocketState, next_state
from ._stream_status import StreamStatus, stream_status_of

__all__ = ["Stream"]


class Stream(Connection):
    """The state of a WebSocket connection and its ASGI stream; see the module docstring."""

    __slots__ = (
        "_decode",
        "_disconnect_read",
        "_lifetime",
        "_peer_close",
        "_reader",
        "_receive",
        "_receiving",
        "_send",
        "_sends_in_a_row",
        "_state",
        "_status",
    )

    def __init__(
        self,
        scope: Mapping[str, Any],
        config: WebSocketConfig,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
        decode: Callable[[Event], Any],
    ) -> None:
        super().__init__(scope, config)
        self._receive = receive
        self._send = send
        self._decode = decode  # what `async for` yields (the WebSocket's receive_type)
        self._state = WebSocketState.CONNECTING
        # The client's close code and reason, once known.
        self._peer_close: tuple[int, str] | None = None
        # The server's report on the stream, if it gives one (None: see _reader.py).
        self._status: StreamStatus | None = stream_status_of(scope)
        self._disconnect_read = False  # the "websocket.disconnect" event was taken
        self._receiving = False  # a task is inside receive()
        self._sends_in_a_row = 0  # since the last message received (servers without status)
        self._lifetime: Lifetime | None = None  # inside `async with`
        self._reader: Reader | None = None  # made when first needed (servers without status)

    async def _before_receive(self) -> None:
        """Called before a receive unless the connection is open and the client there."""
        raise NotImplementedError

    async def _before_send(self) -> None:
        """Called before a send unless the connection is open and reported on."""
        raise NotImplementedError

    # -- State -------------------------------------------------------------------------

    def _sync(self) -> WebSocketState:
        """The state, after taking in what the server reports about the stream."""
        status = self._status
        if status is not None and self._peer_close is None and status.close is not None:
            self._peer_closed(status.close)
        return self._state

    def _check(self, transition: Transition) -> WebSocketState:
        """Raise unless ``transition`` is allowed now; return where it leads."""
        return next_state(self._sync(), transition, self._peer_close)

    def _peer_closed(self, close: tuple[int, str]) -> WebSocketDisconnect:
        self._peer_close = close
        lifetime = self._lifetime
        if lifetime is not None and self._state is WebSocketState.CONNECTED:
            lifetime.closed_by("client", close[0])  # (not after the server's own close)
        self._state = next_state(self._state, Transition.PEER_CLOSE)
        return WebSocketDisconnect(*close)

    def _disconnect_event(self, event: Event) -> WebSocketDisconnect:
        """Take in the ``websocket.disconnect`` event that receive() got."""
        if event["type"] != "websocket.disconnect":
            raise WebSocketStateError(f"unexpected ASGI event {event['type']!r} from the server")
        self._disconnect_read = True
        return self._disconnect_seen(event)

    def _disconnect_seen(self, event: Event) -> WebSocketDisconnect:
        """Take in the client's close from a disconnect event (the reader's, still to be
        received after the messages before it, or receive()'s own)."""
        code = event.get("code")
        return self._peer_closed((1005 if code is None else int(code), event.get("reason") or ""))

    async def _send_or_lost(self, message: Event) -> None:
        try:
            await self._send(message)
        except OSError as exc:
            raise self._lost() from exc

    def _lost(self) -> WebSocketDisconnect:
        # ASGI 2.4: a server raises OSError for a send on a connection that is gone. The
        # stream status, if any, has the client's code; else the connection was lost.
        status = self._status
        close = status.close if status is not None else None
        return self._peer_closed(close or self._peer_close or (1006, ""))

    # -- Receiving ---------------------------------------------------------------------

    async def _receive_message(self, *, iterating: bool = False) -> Any:
        """The next ``websocket.receive`` event, or (``iterating``) the next decoded message,
        with ``StopAsyncIteration`` for a caught close code."""
        status = self._status
        if self._state is not WebSocketState.CONNECTED or (
            status is not None and status.close is not None
        ):
            try:
                await self._before_receive()
            except WebSocketDisconnect as exc:
                raise self._ended(exc, iterating) from None
        if self._receiving:
            raise trio.BusyResourceError(
                "another task is already receiving on this WebSocket; "
                "receive from one task and pass messages on"
            )
        self._receiving = True
        try:
            reader = self._reader
            if reader is None or not reader.holds_events:
                event: Event = await self._receive()
            else:
                event = await self._read_from(reader)
        finally:
            self._receiving = False
        if event["type"] == "websocket.receive":
            self._sends_in_a_row = 0
            lifetime = self._lifetime
            if lifetime is not None:
                lifetime.message_received()
            return self._decode(event) if iterating else event
        raise self._ended(self._disconnect_event(event), iterating)

    def _ended(self, disconnect: WebSocketDisconnect, iterating: bool) -> Exception:
        # A caught close code ends `async for` quietly.
        if iterating and disconnect.code in self._config.caught_close_codes:
            return StopAsyncIteration()
        return disconnect

    async def _read_from(self, reader: Reader) -> Event:
        try:
            return await reader.get()
        except Exception as exc:
            raise WebSocketStateError("the server's receive() failed") from exc

    # -- Sending -----------------------------------------------------------------------

    async def _send_message(self, message: Event) -> None:
        status = self._status
        if self._state is not WebSocketState.CONNECTED or status is None or status.close:
            await self._before_send()
        try:
            await self._send(message)
        except OSError as exc:
            raise self._lost() from exc
        lifetime = self._lifetime
        if lifetime is not None and lifetime.record is not None:
            lifetime.record.sent += 1

    async def _before_unreported_send(self) -> None:
        # The server does not report closes (see _reader.py). From the second send in a
        # row: a checkpoint, since such a server may drop a send without one and a loop
        # that only sends would starve every other task; and inside `async with`, a
        # reader, so that the disconnect is seen.
        self._sends_in_a_row += 1
        if self._sends_in_a_row < 2:
            return
        lifetime = self._lifetime
        if lifetime is not None and not self._receiving:
            reader = self._reader
            if reader is None:
                self._reader = reader = Reader(
                    self._receive, self._config.max_buffered_messages, self._disconnect_seen
                )
            reader.start(lifetime.nursery)
        await trio.lowlevel.checkpoint()
        self._check(Transition.SEND)  # the client may have gone meanwhile
