"""The WebSocket class: Bocadillo's API over an ASGI connection, Trio-native."""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import trio

from ._config import WebSocketConfig
from ._datastructures import (
    URL,
    Address,
    Headers,
    QueryParams,
    headers_from_scope,
    query_params_from_scope,
    url_from_scope,
)
from ._errors import (
    MessageValidationError,
    RejectConnection,
    UnexpectedMessageType,
    WebSocketClosedError,
    WebSocketDisconnect,
    WebSocketStateError,
    leaves,
)
from ._shutdown import server_shutdown_of
from ._typed import close_reason, codec_for
from ._validation import (
    HeadersLike,
    validate_accept_headers,
    validate_close_code,
    validate_close_reason,
    validate_reject_status,
    validate_subprotocol,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Event", "Receive", "Send", "WebSocket", "WebSocketState"]

logger = logging.getLogger("trio_bocaws")

Event = MutableMapping[str, Any]
"""An ASGI event (a message received or sent)."""
Receive = Callable[[], Awaitable[Any]]
"""The ASGI ``receive`` callable."""
Send = Callable[[Any], Awaitable[None]]
"""The ASGI ``send`` callable."""

# How long a handler may go on sending without a message received before the connection
# counts as "streaming": a background task then reads for it (to notice that the client
# left), and sends yield to the scheduler now and then. Short enough that a handler which
# only sends learns of a disconnect within a tick of its own loop; long enough that a
# handler answering each message with a burst of sends never hands messages between tasks
# (every such hand-off costs a full scheduler round trip, as much as the whole message).
_WATCH_AFTER: Final = 0.05
# _sending_since after one send: the streak is timed from the second send on.
_UNTIMED: Final = math.inf
# While streaming, one send in this many is a full checkpoint: amortized, a fraction of a
# microsecond per send.
_YIELD_EVERY: Final = 8


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which JSON does not (and send_json refuses).
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


# Messages in and out of ASGI events: plain functions, so that a typed receive or send is
# one coroutine frame on top of the server's, not two.


def _text_of(event: Event) -> str:
    text: str | None = event.get("text")
    if text is None:
        raise UnexpectedMessageType("text", "bytes")
    return text


def _bytes_of(event: Event) -> bytes:
    data: bytes | None = event.get("bytes")
    if data is None:
        raise UnexpectedMessageType("bytes", "text")
    return data


def _json_of(event: Event) -> Any:
    text = event.get("text")
    if text is None:
        data = event.get("bytes") or b""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(
                f"binary message is not UTF-8 ({exc.reason})", repr(data[:64]), exc.start
            ) from None
    return json.loads(text, parse_constant=_refuse_constant)


def _event_of(event: Event) -> Event:
    return event


def _text_event(data: str) -> Event:
    if not isinstance(data, str):
        raise TypeError(f"send_text() takes a str, not {type(data).__name__}")
    return {"type": "websocket.send", "text": data}


def _bytes_event(data: bytes | bytearray | memoryview) -> Event:
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_bytes() takes bytes, not {type(data).__name__}")
        data = bytes(data)
    return {"type": "websocket.send", "bytes": data}


def _json_event(data: Any) -> Event:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return {"type": "websocket.send", "text": text}


class _Reader:
    """The background reader's state: made when a reader first starts, which most
    connections never need (so each WebSocket carries one field for it, not six)."""

    __slots__ = ("active", "buffer", "error", "handoff", "lot", "paused")

    def __init__(self) -> None:
        self.active = True  # holding the server's receive (else parked on ``lot``)
        self.paused = False  # parked because ``buffer`` is full
        self.buffer: deque[Event] = deque()
        self.error: Exception | None = None
        self.lot = trio.lowlevel.ParkingLot()  # where the reader waits
        self.handoff = trio.lowlevel.ParkingLot()  # where a receive() waits for the reader


class _Request:
    """What a WebSocket parsed from its scope, on first use."""

    __slots__ = ("headers", "query_params", "url")

    def __init__(self) -> None:
        self.url: URL | None = None
        self.headers: Headers | None = None
        self.query_params: QueryParams | None = None


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


_CONNECTING: Final = WebSocketState.CONNECTING
_CONNECTED: Final = WebSocketState.CONNECTED
_REJECTED: Final = WebSocketState.REJECTED
_CLOSED: Final = WebSocketState.CLOSED
_DISCONNECTED: Final = WebSocketState.DISCONNECTED

_DEFAULT_CONFIG: Final = WebSocketConfig()


def _errors_in(error: BaseException | None) -> set[int]:
    if error is None:
        return set()
    return {id(leaf) for leaf in leaves(error) if not isinstance(leaf, trio.Cancelled)}


def _same_errors(raised: BaseException, exc: BaseException | None) -> bool:
    """Whether ``raised`` carries the same exceptions as ``exc``, cancellations aside."""
    return exc is not None and _errors_in(raised) == _errors_in(exc)


class WebSocket:
    """A WebSocket connection, as in Bocadillo, for Trio.

    Args:
        scope: The ASGI ``"websocket"`` scope.
        receive: The ASGI ``receive`` callable.
        send: The ASGI ``send`` callable.
        auto_accept: Accept the handshake on the first ``send*``/``receive*`` or on entering
            ``async with``. If ``False``, call :meth:`accept` (or :meth:`reject`) yourself.
        value_type: Sets both ``receive_type`` and ``send_type``.
        receive_type: What :meth:`receive` returns: ``"text"`` (default), ``"bytes"``,
            ``"json"`` or ``"event"``; or typed messages (an attrs class, a union of attrs
            classes with a tag field, :class:`~trio_bocaws.TypedMessages`), which
            :meth:`receive` returns validated and :meth:`send` takes as instances.
        send_type: What :meth:`send` takes, from the same choices.
        caught_close_codes: Client close codes that end ``async with`` and ``async for``
            quietly: a tuple of ints (default ``(1000, 1001)``), the builtin :func:`all`,
            or ``()`` for none.
        config: A :class:`~trio_bocaws.WebSocketConfig` to start from; the keywords above
            override it.

    Raises:
        ValueError: ``scope`` is not a WebSocket scope, or an option is invalid (an unknown
            value type, say; the message lists the allowed values).

    ``async with ws:`` accepts the connection, watches it while the body runs (so a
    handler that only sends still learns that the client left), and closes it on the
    way out: 1000 after a normal exit, 1011 after an exception, 1001 after a cancellation.
    A :class:`~trio_bocaws.WebSocketDisconnect` whose code is in ``caught_close_codes``
    ends the block quietly.
    """

    __slots__ = (
        "_answering",
        "_cancel_close",
        "_config",
        "_decode",
        "_depth",
        "_disconnect",
        "_encode",
        "_got_connect",
        "_nursery",
        "_nursery_manager",
        "_reader",
        "_receive",
        "_received_at",
        "_receiving",
        "_request",
        "_rooms",
        "_scope",
        "_send",
        "_sending_since",
        "_state",
        "_streaming",
        "_subprotocol",
        "_unyielded_sends",
        "_user",
    )

    def __init__(
        self,
        scope: Mapping[str, Any],
        receive: Receive,
        send: Send,
        auto_accept: bool = True,
        value_type: Any = None,
        receive_type: Any = None,
        send_type: Any = None,
        caught_close_codes: Any = None,
        *,
        config: WebSocketConfig | None = None,
    ) -> None:
        scope_type = scope.get("type") if isinstance(scope, Mapping) else None
        if scope_type != "websocket":
            raise ValueError(
                f"WebSocket needs an ASGI scope of type 'websocket', got {scope_type!r}"
            )
        base = _DEFAULT_CONFIG if config is None else config
        config = base.with_options(
            # The Bocadillo signature defaults auto_accept to True, so only a False can
            # override a config that says otherwise.
            auto_accept=None if auto_accept else False,
            value_type=value_type,
            receive_type=receive_type,
            send_type=send_type,
            caught_close_codes=caught_close_codes,
        )
        self._scope = scope
        self._receive = receive
        self._send = send
        self._config = config
        receive_type, send_type = config.receive_type, config.send_type
        # A str is one of the four value types; anything else is typed messages (validated
        # by the config), whose codec is built once per type and shared.
        if type(receive_type) is str:
            self._decode = _DECODERS[receive_type]
        else:
            self._decode = codec_for(receive_type, config.converter).decode
        if type(send_type) is str:
            self._encode = _ENCODERS[send_type]
        else:
            self._encode = codec_for(send_type, config.converter).encode
        self._state = _CONNECTING
        self._got_connect = False
        self._answering: trio.Event | None = None
        self._subprotocol: str | None = None
        # The client's close code and reason, once it has gone.
        self._disconnect: tuple[int, str] | None = None
        # url, headers and query_params, parsed from the scope on first use: one field
        # for the three, since most connections never ask.
        self._request: _Request | None = None
        # Set while a task is inside receive(), directly or waiting for the reader.
        self._receiving = False
        # When the current run of sends without a message received began, and whether it
        # has gone on long enough to count as streaming.
        self._sending_since: float | None = None
        self._streaming = False
        self._unyielded_sends = 0
        # The connection's nursery (inside `async with`), how deeply `async with` is nested,
        # and the close to send if the server's shutdown cancels the block.
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None
        self._depth = 0
        self._cancel_close: tuple[int, str] | None = None
        # When the last message arrived; kept only when the config has an idle timeout.
        self._received_at: float | None = None
        self._user: Any = None
        self._rooms: dict[str, Any] | None = None  # the broadcast rooms joined
        # The background reader; created the first time it is needed.
        self._reader: _Reader | None = None  # made when a background reader first starts

    @classmethod
    def from_config(
        cls,
        scope: Mapping[str, Any],
        receive: Receive,
        send: Send,
        config: WebSocketConfig,
    ) -> Self:
        """Create a WebSocket that uses ``config`` as it is (shared, not copied)."""
        return cls(scope, receive, send, config=config)

    # -- What the client asked for ------------------------------------------------------

    @property
    def scope(self) -> Mapping[str, Any]:
        """The ASGI scope of the connection."""
        return self._scope

    @property
    def config(self) -> WebSocketConfig:
        """The options this connection runs with."""
        return self._config

    @property
    def url(self) -> URL:
        """The URL the client connected to, as a ``str`` with ``scheme``, ``hostname``,
        ``port``, ``path`` and ``query`` attributes."""
        request = self._parsed()
        if request.url is None:
            request.url = url_from_scope(self._scope)
        return request.url

    @property
    def headers(self) -> Headers:
        """The handshake's headers (read-only, case-insensitive, repeated names kept)."""
        request = self._parsed()
        if request.headers is None:
            request.headers = headers_from_scope(self._scope)
        return request.headers

    @property
    def query_params(self) -> QueryParams:
        """The query parameters (``params["k"]`` is the first value, ``params.getall("k")``
        every value)."""
        request = self._parsed()
        if request.query_params is None:
            request.query_params = query_params_from_scope(self._scope)
        return request.query_params

    def _parsed(self) -> _Request:
        request = self._request
        if request is None:
            self._request = request = _Request()
        return request

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order of preference."""
        return tuple(self._scope.get("subprotocols") or ())

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol accepted, if any."""
        return self._subprotocol

    @property
    def client(self) -> Address | None:
        """The client's address, if the server knows it."""
        client = self._scope.get("client")
        return None if client is None else Address(client[0], client[1])

    # -- Options (Bocadillo exposed these as attributes) -------------------------------

    @property
    def auto_accept(self) -> bool:
        """Whether the handshake is accepted on first use."""
        return self._config.auto_accept

    @property
    def receive_type(self) -> Any:
        """What :meth:`receive` returns."""
        return self._config.receive_type

    @property
    def send_type(self) -> Any:
        """What :meth:`send` takes."""
        return self._config.send_type

    @property
    def caught_close_codes(self) -> Any:
        """Client close codes that end ``async with`` and ``async for`` quietly."""
        return self._config.caught_close_codes

    @property
    def state(self) -> WebSocketState:
        """Where the connection is in its life."""
        return self._state

    @property
    def user(self) -> Any:
        """What the route's ``authenticate`` hook returned (a user, say); ``None`` without
        a hook."""
        return self._user

    @property
    def close_code(self) -> int | None:
        """The client's close code once it has gone, else ``None``."""
        return None if self._disconnect is None else self._disconnect[0]

    def __repr__(self) -> str:
        path = self._scope.get("path", "?")
        return f"<WebSocket {path!r} {self._state.value}>"

    # -- The handshake ------------------------------------------------------------------

    async def _receive_connect(self) -> None:
        # ASGI opens every WebSocket with "websocket.connect"; take it before answering.
        if self._got_connect:
            return
        event = await self._receive()
        self._got_connect = True
        if event["type"] == "websocket.disconnect":
            raise self._record_disconnect(event)

    async def accept(
        self,
        subprotocol: str | None = None,
        *,
        headers: HeadersLike | None = None,
    ) -> None:
        """Accept the connection request.

        Args:
            subprotocol: One of the subprotocols the client offered (:attr:`subprotocols`).
            headers: Extra response headers, as ``(name, value)`` pairs or a mapping.

        Raises:
            ValueError: The client did not offer ``subprotocol``, or a header is invalid or
                is one the server sets itself. Nothing has been sent.
            WebSocketStateError: The connection was already accepted, rejected or closed.
            WebSocketDisconnect: The client left before the handshake was answered.
        """
        self._check_can_answer("accept")
        chosen = validate_subprotocol(subprotocol, self.subprotocols)
        extra = validate_accept_headers(headers)
        message: Event = {"type": "websocket.accept", "subprotocol": chosen}
        if extra:
            message["headers"] = extra
        async with self._answering_handshake():
            await self._receive_connect()
            await self._send_or_disconnect(message)
            self._state = _CONNECTED
        self._subprotocol = chosen
        self._sending_since = trio.current_time()

    async def reject(
        self,
        status: int = 403,
        *,
        body: bytes | str = b"",
        headers: HeadersLike | None = None,
    ) -> None:
        """Refuse the connection request.

        Before :meth:`accept`, the client's handshake fails with an HTTP response:
        ``status`` (403 by default), ``headers`` and ``body`` when the server supports the
        ASGI ``websocket.http.response`` extension (hypercorn does), else a plain 403.
        After :meth:`accept`, the connection is closed with 1008 (policy violation).

        Raises:
            ValueError: ``status`` is not a 4xx or 5xx status, or a header is invalid.
            WebSocketStateError: The connection was already rejected or closed.
        """
        status = validate_reject_status(status)
        if self._state is _CONNECTED:
            await self.close(1008)
            return
        self._check_can_answer("reject")
        payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        extra = validate_accept_headers(headers)
        async with self._answering_handshake():
            await self._refuse(status, payload, extra)

    async def _refuse(self, status: int, payload: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        await self._receive_connect()
        if "websocket.http.response" in (self._scope.get("extensions") or {}):
            response_headers = [(b"content-length", str(len(payload)).encode("ascii"))]
            if payload and not any(name == b"content-type" for name, _ in extra):
                response_headers.append((b"content-type", b"text/plain; charset=utf-8"))
            await self._send_or_disconnect(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": response_headers + extra,
                }
            )
            await self._send_or_disconnect(
                {"type": "websocket.http.response.body", "body": payload}
            )
        else:
            # Without the extension the server answers a close before accept with 403.
            await self._send_or_disconnect({"type": "websocket.close", "code": 1008})
        self._state = _REJECTED

    @contextlib.asynccontextmanager
    async def _answering_handshake(self) -> AsyncIterator[None]:
        # Marks the handshake as being answered, so that a second task's auto-accept waits
        # for this one instead of sending a second answer (which hypercorn refuses).
        self._answering = answering = trio.Event()
        try:
            yield
        finally:
            self._answering = None
            answering.set()

    def _check_can_answer(self, action: str) -> None:
        state = self._state
        if state is _CONNECTING:
            if self._answering is not None:
                raise WebSocketStateError(
                    f"cannot {action}: another task is answering the handshake"
                )
            return
        if state is _CONNECTED:
            raise WebSocketStateError(f"cannot {action}: the WebSocket was already accepted")
        if state is _DISCONNECTED:
            raise self._disconnected()
        raise WebSocketClosedError(f"cannot {action}: the WebSocket was already {state.value}")

    # -- Closing -------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason``.

        Before :meth:`accept`, this refuses the handshake (as :meth:`reject` does): with
        ``code`` as the HTTP status if it is one (Bocadillo's ``close(403)``), else 403.

        Raises:
            ValueError: ``code`` may not be sent by a server (1004-1006, 1015, 1016-2999, or
                outside 1000-4999), or ``reason`` is over 123 bytes of UTF-8.
            WebSocketClosedError: The WebSocket was already closed or rejected.
            WebSocketDisconnect: The client had already gone.
        """
        reason = validate_close_reason(reason)
        if self._state is _CONNECTING:
            # Bocadillo's reject() was close(403): an HTTP error status is valid only here,
            # and becomes the status of the refused handshake.
            if type(code) is int and 400 <= code <= 599:
                await self.reject(code)
            else:
                validate_close_code(code)
                await self.reject()
            return
        code = validate_close_code(code)
        if self._state is _CONNECTED:
            # Closed from here on, even if sending fails: the application is done with it.
            self._state = _CLOSED
            await self._send_or_disconnect(
                {"type": "websocket.close", "code": code, "reason": reason}
            )
            return
        self._check_can_answer("close")

    async def ensure_closed(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection unless it is already closed, rejected or disconnected.

        Never raises for a connection that is already over; invalid arguments are still
        refused with ``ValueError``.
        """
        reason = validate_close_reason(reason)
        code = validate_close_code(code)
        state = self._state
        if state is _CONNECTED or state is _CONNECTING:
            with contextlib.suppress(WebSocketDisconnect):
                await self.close(code, reason)
        else:
            await trio.lowlevel.checkpoint()

    # -- Receiving -----------------------------------------------------------------------

    async def _receive_message(
        self, decode: Callable[[Event], Any] = _event_of, iterating: bool = False
    ) -> Any:
        # Every receive* and the iterator come here directly, and ``decode`` turns the event
        # into the message: one coroutine frame on top of the server's receive, per message
        # and for as long as an idle connection waits.
        try:
            if self._state is _CONNECTING:
                await self._auto_accept("receive")
            # The hot path: nobody else is receiving, nothing is buffered, the background
            # reader is not holding the ASGI receive. Then the server's receive is awaited
            # directly, with no task in between.
            if (
                self._state is _CONNECTED
                and not self._receiving
                and (self._reader is None or not (self._reader.active or self._reader.buffer))
            ):
                self._receiving = True
                try:
                    event: Event = await self._receive()
                finally:
                    self._receiving = False
            else:
                event = await self._receive_slow()
            self._sending_since = None
            self._streaming = False
            if event["type"] == "websocket.receive":
                if self._received_at is not None:  # only with an idle timeout
                    self._received_at = trio.current_time()
                return decode(event)
            raise self._record_disconnect(event)
        except WebSocketDisconnect as exc:
            if iterating and exc.code in self._config.caught_close_codes:
                raise StopAsyncIteration from None
            raise

    async def _receive_slow(self) -> Event:
        if self._receiving:
            raise trio.BusyResourceError(
                "another task is already receiving on this WebSocket; "
                "receive from one task and pass messages on"
            )
        state = self._state
        if state is _CONNECTING:
            await self._auto_accept("receive")
        elif state is not _CONNECTED and state is not _DISCONNECTED:
            raise self._closed_error("receive")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            while True:
                reader = self._reader
                if reader is not None and reader.buffer:
                    event = reader.buffer.popleft()
                    if reader.paused:
                        reader.paused = False
                        reader.lot.unpark()
                    return event
                if self._disconnect is not None:
                    # Gone; this holds also when the application had closed first.
                    raise self._disconnected()
                if reader is not None and reader.error is not None:
                    raise WebSocketStateError("the server's receive() failed") from reader.error
                if reader is None or not reader.active:
                    direct: Event = await self._receive()
                    return direct
                # The reader holds the server's receive: wait for what it gets.
                await reader.handoff.park()
        finally:
            self._receiving = False

    def _record_disconnect(self, event: Event) -> WebSocketDisconnect:
        if event["type"] != "websocket.disconnect":
            raise WebSocketStateError(f"unexpected ASGI event {event['type']!r} from the server")
        code = event.get("code")
        self._disconnect = (1005 if code is None else int(code), event.get("reason") or "")
        if self._state is _CONNECTED or self._state is _CONNECTING:
            self._state = _DISCONNECTED
        return self._disconnected()

    def _disconnected(self) -> WebSocketDisconnect:
        code, reason = self._disconnect or (1006, "")
        return WebSocketDisconnect(code, reason)

    async def receive_event(self) -> Event:
        """Receive a raw ASGI ``websocket.receive`` event.

        Raises:
            WebSocketDisconnect: The client has gone (the ``websocket.disconnect`` event is
                turned into this, with its code and reason).
        """
        event: Event = await self._receive_message()
        return event

    async def receive_text(self) -> str:
        """Receive a text message.

        Raises:
            UnexpectedMessageType: The client sent a binary message.
            WebSocketDisconnect: The client has gone.
        """
        text: str = await self._receive_message(_text_of)
        return text

    async def receive_bytes(self) -> bytes:
        """Receive a binary message.

        Raises:
            UnexpectedMessageType: The client sent a text message.
            WebSocketDisconnect: The client has gone.
        """
        data: bytes = await self._receive_message(_bytes_of)
        return data

    async def receive_json(self) -> Any:
        """Receive a JSON document, sent as a text or a binary (UTF-8) message.

        Raises:
            json.JSONDecodeError: The message is not valid JSON (``NaN`` and ``Infinity``
                included: Python's json module would take them, JSON does not).
            WebSocketDisconnect: The client has gone.
        """
        return await self._receive_message(_json_of)

    async def receive(self) -> Any:
        """Receive a message of the configured ``receive_type``.

        Raises:
            MessageValidationError: With typed messages, the message does not fit (it is
                consumed; the connection stays usable).
        """
        return await self._receive_message(self._decode)

    # -- Sending -------------------------------------------------------------------------

    async def _send_message(self, message: Event) -> None:
        if self._state is not _CONNECTED:
            await self._prepare_send()
        if self._streaming:
            self._unyielded_sends += 1
            if self._unyielded_sends >= _YIELD_EVERY:
                await self._yield_while_streaming()
        else:
            since = self._sending_since
            if since is None:
                # The first send since a message came in. A handler that answers each
                # message once never sends a second, so the clock is read from that on.
                self._sending_since = _UNTIMED
            else:
                now = trio.current_time()
                if since == _UNTIMED:
                    self._sending_since = now
                elif now - since >= _WATCH_AFTER:
                    self._streaming = True
                    if not self._receiving:
                        self._watch()
        try:
            await self._send(message)
        except OSError as exc:
            # ASGI 2.4: a server raises OSError for a send on a connection that is gone.
            raise self._lost(exc) from exc

    async def _send_or_disconnect(self, message: Event) -> None:
        try:
            await self._send(message)
        except OSError as exc:
            raise self._lost(exc) from exc

    def _lost(self, exc: OSError) -> WebSocketDisconnect:
        if self._disconnect is None:
            self._disconnect = (1006, "")
        if self._state is _CONNECTED or self._state is _CONNECTING:
            self._state = _DISCONNECTED
        logger.debug("send failed, the client is gone: %r", exc)
        return self._disconnected()

    async def _prepare_send(self) -> None:
        state = self._state
        if state is _CONNECTING:
            await self._auto_accept("send")
        elif state is _DISCONNECTED:
            raise self._disconnected()
        else:
            raise self._closed_error("send")

    async def _auto_accept(self, action: str) -> None:
        if not self._config.auto_accept:
            raise WebSocketStateError(
                f"cannot {action} before the connection is accepted: call accept() first "
                "(or use auto_accept=True)"
            )
        answering = self._answering
        if answering is None:
            await self.accept()
            return
        # Another task of this connection is accepting (or rejecting): wait for the outcome.
        await answering.wait()
        if self._state is _DISCONNECTED:
            raise self._disconnected()
        if self._state is not _CONNECTED:
            raise self._closed_error(action)

    def _closed_error(self, action: str) -> WebSocketClosedError:
        return WebSocketClosedError(
            f"cannot {action}: the WebSocket was {self._state.value} by the application"
        )

    async def send_event(self, event: Event) -> None:
        """Send a raw ASGI event: ``websocket.send``, ``websocket.close`` or
        ``websocket.accept``.

        Raises:
            ValueError: The event's type is none of those, or its fields are invalid.
        """
        kind = event.get("type")
        if kind == "websocket.send":
            text: str | None = event.get("text")
            data: bytes | None = event.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("a websocket.send event needs exactly one of 'text' or 'bytes'")
            if text is not None:
                await self.send_text(text)
            elif data is not None:
                await self.send_bytes(data)
        elif kind == "websocket.close":
            await self.close(event.get("code", 1000), event.get("reason") or "")
        elif kind == "websocket.accept":
            await self.accept(event.get("subprotocol"), headers=event.get("headers"))
        else:
            raise ValueError(
                f"cannot send an ASGI event of type {kind!r}; use 'websocket.send', "
                "'websocket.close' or 'websocket.accept'"
            )

    async def send_text(self, data: str) -> None:
        """Send a text message.

        Raises:
            TypeError: ``data`` is not a ``str``. Nothing was sent.
            WebSocketDisconnect: The client has gone.
        """
        await self._send_message(_text_event(data))

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message.

        Raises:
            TypeError: ``data`` is not bytes-like. Nothing was sent.
            WebSocketDisconnect: The client has gone.
        """
        await self._send_message(_bytes_event(data))

    async def send_json(self, data: Any) -> None:
        """Serialize ``data`` to JSON and send it as a text message.

        Raises:
            TypeError: ``data`` is not JSON serializable. Nothing was sent.
            ValueError: ``data`` holds a NaN or infinite float, which JSON cannot carry.
            WebSocketDisconnect: The client has gone.
        """
        await self._send_message(_json_event(data))

    async def send(self, message: Any) -> None:
        """Send a message of the configured ``send_type``.

        Raises:
            TypeError: With typed messages, ``message`` is not an instance of the send
                type. Nothing was sent.
        """
        encode = self._encode
        if encode is None:
            await self.send_event(message)
        else:
            await self._send_message(encode(message))

    # -- Watching the connection while the handler does something else -------------------

    async def _yield_while_streaming(self) -> None:
        # A server may drop a send without yielding once the client is gone (hypercorn
        # does), and then a loop that only sends would never let the task that notices the
        # disconnect run. While streaming, every _YIELD_EVERY-th send is a full checkpoint.
        self._unyielded_sends = 0
        if not self._receiving and (self._reader is None or not self._reader.active):
            self._watch()
        await trio.lowlevel.checkpoint()

    def _watch(self) -> None:
        """Have a background task read from the server until someone calls receive()."""
        nursery = self._nursery
        if nursery is None:
            return  # only inside `async with ws` is there a nursery to read from
        reader = self._reader
        if reader is None:
            self._reader = reader = _Reader()
            nursery.start_soon(self._read_in_background, reader)
        else:
            reader.active = True
            reader.lot.unpark()

    async def _read_in_background(self, reader: _Reader) -> None:
        buffer, lot, handoff = reader.buffer, reader.lot, reader.handoff
        limit = self._config.max_buffered_messages
        while True:
            if not reader.active:
                await lot.park()  # until _watch() needs us again
                continue
            if len(buffer) >= limit:
                # Stop reading: the server's own queue fills and it stops reading the
                # socket, so the client is slowed down and nothing is lost.
                reader.paused = True
                await lot.park()
                continue
            try:
                event = await self._receive()
            except Exception as exc:
                # Kept for the next receive() to raise: an exception escaping this task
                # would arrive wrapped in a group, far from the code that can act on it.
                reader.error = exc
                handoff.unpark_all()
                return
            kind = event["type"]
            if kind == "websocket.receive":
                buffer.append(event)
            elif kind == "websocket.disconnect":
                self._record_disconnect(event)
                handoff.unpark_all()
                return
            if self._receiving:
                # Someone is waiting in receive(): hand over and step back, so that
                # from now on they read from the server directly.
                reader.active = False
                handoff.unpark_all()

    # -- The connection's lifetime: async with ------------------------------------------

    @property
    def nursery(self) -> trio.Nursery:
        """A nursery for tasks that belong to this connection.

        Open while the connection is (inside ``async with ws``, or while an
        :class:`~trio_bocaws.App` view runs). Tasks started here are cancelled when the
        block ends; an exception in one of them cancels the block and closes the
        connection with 1011.

        Raises:
            WebSocketStateError: Outside ``async with ws``.
        """
        if self._nursery is None:
            raise WebSocketStateError("ws.nursery exists only inside `async with ws`")
        return self._nursery

    async def __aenter__(self) -> Self:
        return await self._open(accept=True)

    async def _open(self, *, accept: bool) -> Self:
        if accept and self._state is _CONNECTING:
            await self.accept()
        if self._nursery_manager is not None:
            # Nested, typically a view's own `async with ws` inside the App's: the outer
            # block owns the nursery; this one only closes on its way out.
            self._depth += 1
            return self
        manager = trio.open_nursery()
        self._nursery = nursery = await manager.__aenter__()
        self._nursery_manager = manager
        shutdown = server_shutdown_of(self._scope)
        if shutdown is not None:
            shutdown.watch(self)
        idle_timeout = self._config.idle_timeout
        if idle_timeout is not None:
            self._received_at = trio.current_time()
            nursery.start_soon(self._close_when_idle, idle_timeout)
        return self

    def _shut_down(self) -> None:
        """Cancel the block because the server is stopping; close with the shutdown code."""
        config = self._config
        self._cancel_with(config.shutdown_close_code, config.shutdown_close_reason)

    def _cancel_with(self, code: int, reason: str) -> None:
        """Cancel the block (and the connection's tasks); close with ``code``, ``reason``."""
        if self._nursery is not None and self._cancel_close is None:
            self._cancel_close = (code, reason)
            self._nursery.cancel_scope.cancel()

    async def _close_when_idle(self, limit: float) -> None:
        # _received_at moves on with every message; wake when it may have gone stale.
        while True:
            last = self._received_at
            assert last is not None
            if trio.current_time() >= last + limit:
                break
            await trio.sleep_until(last + limit)
        self._cancel_with(1001, f"idle: no message for {limit:g} seconds")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._depth:
            self._depth -= 1
            return await self._close_after(exc)  # noqa: ASYNC102 (shielded inside)
        manager, nursery = self._nursery_manager, self._nursery
        if manager is None or nursery is None:
            raise WebSocketStateError("__aexit__ without a matching __aenter__")
        shutdown = server_shutdown_of(self._scope)
        if shutdown is not None:
            shutdown.unwatch(self)
        # The body is over: stop the reader and any task started for this connection.
        nursery.cancel_scope.cancel()
        try:
            # Not shielded: the nursery must close in the cancel scope it opened in. Its
            # tasks were just cancelled, so this is brief.
            await manager.__aexit__(exc_type, exc, tb)  # noqa: ASYNC102
        except BaseException as raised:
            # A nursery wraps the body's exception in a group (and copies groups). When the
            # group holds nothing else, let the body's own exception propagate, unwrapped.
            failure = exc if _same_errors(raised, exc) else raised
        else:
            failure = None  # the nursery absorbed its own cancellation (server shutdown)
        finally:
            self._nursery_manager = self._nursery = None
        swallow = await self._close_after(failure)  # noqa: ASYNC102 (shielded inside)
        if failure is None or failure is exc:
            return failure is None or swallow
        raise failure

    async def _close_after(self, failure: BaseException | None) -> bool:
        """Close as the outcome of the block requires; return whether to swallow it."""
        swallow = False
        refusal: RejectConnection | None = None
        invalid: MessageValidationError | None = None
        if failure is None:
            outcome = "normal"
        else:
            errors = leaves(failure)
            if all(isinstance(leaf, WebSocketDisconnect) for leaf in errors):
                caught = self._config.caught_close_codes
                swallow = all(leaf.code in caught for leaf in errors)  # type: ignore[attr-defined]
                outcome = "normal" if swallow else "error"
            elif len(errors) == 1 and isinstance(errors[0], RejectConnection):
                refusal, swallow = errors[0], True
                outcome = "refused"
            elif len(errors) == 1 and isinstance(errors[0], MessageValidationError):
                # The client's fault, not the server's: 1007 (invalid payload), not 1011.
                invalid = errors[0]
                outcome = "invalid"
            elif any(isinstance(leaf, trio.Cancelled) for leaf in errors) or not any(
                isinstance(leaf, Exception) for leaf in errors
            ):
                outcome = "cancelled"  # a timeout, server shutdown, KeyboardInterrupt
            else:
                outcome = "error"
        if self._cancel_close is not None and outcome == "normal":
            outcome = "cancelled"  # shut down or idle; the nursery absorbed the cancellation
        if self._state is _CONNECTED or self._state is _CONNECTING:
            await self._close_within_timeout(outcome, refusal, invalid)
        return swallow

    async def _close_within_timeout(
        self,
        outcome: str,
        refusal: RejectConnection | None,
        invalid: MessageValidationError | None = None,
    ) -> None:
        config = self._config
        if invalid is not None:
            code, reason = 1007, close_reason(invalid)
        elif outcome == "cancelled":
            code, reason = self._cancel_close or (
                config.cancelled_close_code,
                config.cancelled_close_reason,
            )
        elif outcome == "refused":
            code, reason = 1008, ""
        else:
            code, reason = (1000 if outcome == "normal" else 1011), ""
        # Shielded so that a cancelled handler still sends its close frame; bounded so that
        # a client that stopped reading cannot hold the handler here forever.
        with trio.move_on_after(config.close_timeout, shield=True) as scope:
            try:
                if self._state is _CONNECTING:
                    await self._answer_unanswered(outcome, code, reason, refusal)
                else:
                    await self.close(code, reason)
            except (WebSocketDisconnect, WebSocketStateError):
                pass  # the client left first, or the handler closed it meanwhile
        if scope.cancelled_caught:
            logger.warning(
                "closing %r took longer than close_timeout=%ss; gave up",
                self,
                config.close_timeout,
            )

    async def _answer_unanswered(
        self, outcome: str, code: int, reason: str, refusal: RejectConnection | None
    ) -> None:
        """The handler ended without answering the handshake: answer it."""
        if refusal is not None:
            await self.reject(refusal.status, body=refusal.body, headers=refusal.headers)
        elif outcome == "cancelled":
            await self.reject(503)
        elif self._config.auto_accept:
            # As Bocadillo, which accepted before the view ran, would have.
            await self.accept()
            await self.close(code, reason)
        else:
            await self.reject(500 if outcome == "error" else 403)

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[Any]:
        # Not a coroutine function: the receive's own coroutine is the awaitable, with no
        # frame in between. Caught close codes end the iteration.
        return self._receive_message(self._decode, iterating=True)


_DECODERS: Final[dict[str, Callable[[Event], Any]]] = {
    "text": _text_of,
    "bytes": _bytes_of,
    "json": _json_of,
    "event": _event_of,
}
# None: send_event, which does more than wrap a message.
_ENCODERS: Final[dict[str, Callable[[Any], Event] | None]] = {
    "text": _text_event,
    "bytes": _bytes_event,
    "json": _json_event,
    "event": None,
}
