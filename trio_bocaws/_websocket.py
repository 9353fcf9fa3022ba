"""The WebSocket class: Bocadillo's API over an ASGI connection, Trio-native.

The class is the seed's API over small pieces: the state and the ASGI stream (its base,
:mod:`trio_bocaws._stream`, over the transition table of :mod:`trio_bocaws._state`), the
handshake's answer (:mod:`trio_bocaws._handshake`), the codecs (:mod:`trio_bocaws._codecs`)
and the block's lifetime (:mod:`trio_bocaws._lifetime`). Each method checks the state,
awaits the server's ``receive`` or ``send``, and records the transition.

Honest at every call: with a server that reports how its stream ended
(:mod:`trio_bocaws._stream_status`, as trio_bocaws's hypercorn adapter does), :attr:`state`
reads ``DISCONNECTED`` as soon as the server has processed the client's close, and the
first send after it raises :class:`~trio_bocaws.WebSocketDisconnect` with the client's code
and reason; messages that arrived before the close are still received first. On a server
that does not, see :mod:`trio_bocaws._reader`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import trio

from ._codecs import (
    DECODERS,
    ENCODERS,
    Event,
    bytes_event,
    bytes_of,
    json_event,
    json_of,
    text_event,
    text_of,
)
from ._config import WebSocketConfig
from ._errors import WebSocketDisconnect, WebSocketStateError
from ._handshake import Handshake
from ._lifetime import Lifetime
from ._state import Transition, WebSocketState, next_state
from ._stream import Stream
from ._typed import codec_for
from ._validation import (
    HeadersLike,
    validate_close_code,
    validate_close_reason,
    validate_reject_status,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Event", "Receive", "Send", "WebSocket", "WebSocketState", "enter_block", "lifetime_of"]

Receive = Callable[[], Awaitable[Any]]
"""The ASGI ``receive`` callable."""
Send = Callable[[Any], Awaitable[None]]
"""The ASGI ``send`` callable."""

_DEFAULT_CONFIG: Final = WebSocketConfig()


class WebSocket(Stream):
    """A WebSocket connection, as in Bocadillo, for Trio.

    Args:
        scope: The ASGI ``"websocket"`` scope.
        receive: The ASGI ``receive`` callable.
        send: The ASGI ``send`` callable.
        auto_accept: Accept the handshake on the first ``send*``/``receive*`` or on entering
            ``async with``. If ``False``, call :meth:`accept` (or :meth:`reject`) yourself.
        value_type: Sets both ``receive_type`` and ``send_type``.
        receive_type: What :meth:`receive` returns: ``"text"`` (default), ``"bytes"``,
            ``"json"`` or ``"event"``.
        send_type: What :meth:`send` takes, from the same four.
        caught_close_codes: Client close codes that end ``async with`` and ``async for``
            quietly: a tuple of ints (default ``(1000, 1001)``), the builtin :func:`all`,
            or ``()`` for none.
        config: A :class:`~trio_bocaws.WebSocketConfig` to start from; the keywords above
            override it.

    Raises:
        ValueError: ``scope`` is not a WebSocket scope, or an option is invalid (an unknown
            value type, say; the message lists the allowed values).

    ``async with ws:`` accepts the connection, gives it a nursery (:attr:`nursery`), and
    closes it on the way out: 1000 after a normal exit, 1011 after an exception, 1003 or
    1007 after a message the view could not take (:exc:`~trio_bocaws.UnexpectedMessageType`,
    :exc:`json.JSONDecodeError`), 1001 after a cancellation. A
    :class:`~trio_bocaws.WebSocketDisconnect` whose code is in ``caught_close_codes`` ends
    the block quietly.
    """

    __slots__ = ("_encode", "_handshake", "_subprotocol", "_user")

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
        receive_type, send_type = config.receive_type, config.send_type
        # A str is one of the four value types; anything else is typed messages (validated
        # by the config), whose codec is built once per type and shared.
        if type(receive_type) is str:
            decode = DECODERS[receive_type]
        else:
            decode = codec_for(receive_type, config.converter).decode
        super().__init__(scope, config, receive, send, decode)
        if type(send_type) is str:
            self._encode = ENCODERS[send_type]
        else:
            self._encode = codec_for(send_type, config.converter).encode
        # Until the handshake is answered (None after: an idle connection does not keep it).
        self._handshake: Handshake | None = Handshake(scope, receive, send)
        self._subprotocol: str | None = None
        self._user: Any = None

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

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol accepted, if any."""
        return self._subprotocol

    @property
    def state(self) -> WebSocketState:
        """Where the connection is in its life (``DISCONNECTED`` as soon as the server has
        processed the client's close, if the server reports it)."""
        return self._sync()

    @property
    def user(self) -> Any:
        """What the route's ``authenticate`` hook returned (a user, say); ``None`` without
        a hook. An application without :class:`~trio_bocaws.App` may set it itself."""
        return self._user

    @user.setter
    def user(self, value: Any) -> None:
        self._user = value

    @property
    def close_code(self) -> int | None:
        """The client's close code once it has gone, else ``None``."""
        self._sync()
        return None if self._peer_close is None else self._peer_close[0]

    def __repr__(self) -> str:
        path = self._scope.get("path", "?")
        return f"<WebSocket {path!r} {self._state.value}>"

    # -- The handshake -----------------------------------------------------------------

    def _check_handshake(self, transition: Transition) -> Handshake:
        self._check(transition)
        handshake = self._handshake
        assert handshake is not None  # (kept while the state is CONNECTING)
        return handshake

    async def _answer(self, transition: Transition, messages: Sequence[Event]) -> None:
        """Answer the handshake with ``messages``; the state moves on once they went out."""
        handshake = self._check_handshake(transition)
        try:
            gone = await handshake.answer(messages, transition.value)
        except OSError as exc:
            raise self._lost() from exc
        if gone is not None:
            raise self._disconnect_event(gone)
        if self._state is WebSocketState.CONNECTING:  # (the client may have left since)
            self._state = next_state(self._state, transition)
        self._handshake = None

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
        handshake = self._check_handshake(Transition.ACCEPT)
        message = handshake.acceptance(subprotocol, headers)
        await self._answer(Transition.ACCEPT, [message])
        self._subprotocol = message["subprotocol"]

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
        if self._sync() is WebSocketState.CONNECTED:
            await self.close(1008)
            return
        handshake = self._check_handshake(Transition.REJECT)
        await self._answer(Transition.REJECT, handshake.refusal(status, body, headers))
        lifetime = self._lifetime
        if lifetime is not None and self._state is WebSocketState.REJECTED:
            lifetime.refused(status)

    async def _auto_accept(self, action: Transition) -> None:
        if not self._config.auto_accept:
            self._check(action)  # raises: the application must accept first
        answering = None if self._handshake is None else self._handshake.answering
        if answering is None:
            await self.accept()
            return
        # Another task of this connection is accepting (or rejecting): wait for the outcome.
        await answering.wait()
        self._check(action)

    # -- Closing -----------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason``.

        Before :meth:`accept`: with ``auto_accept`` on, the handshake is accepted first,
        so the client sees the code (Bocadillo accepted before the view ran). An HTTP
        error status (Bocadillo's ``close(403)``), or any code with ``auto_accept`` off,
        refuses the handshake instead, as :meth:`reject` does (403 for a code that is not
        an HTTP status).

        A cancelled close still sends its frame (then raises :exc:`trio.Cancelled`). The
        connection counts as closed once the frame has gone out: if it cannot within
        ``close_timeout`` (a client that does not read), the connection stays open and the
        next close (``ensure_closed``, the end of ``async with``) tries again.

        Raises:
            ValueError: ``code`` may not be sent by a server (1004-1006, 1015, 1016-2999, or
                outside 1000-4999), or ``reason`` is over 123 bytes of UTF-8.
            WebSocketClosedError: The WebSocket was already closed or rejected.
            WebSocketDisconnect: The client had already gone.
        """
        reason = validate_close_reason(reason)
        if self._sync() is WebSocketState.CONNECTING:
            if type(code) is int and 400 <= code <= 599:
                await self.reject(code)
                return
            validate_close_code(code)
            if not self._config.auto_accept:
                await self.reject()
                return
            await self._auto_accept(Transition.CLOSE)
        code = validate_close_code(code)
        self._check(Transition.CLOSE)
        message = {"type": "websocket.close", "code": code, "reason": reason}
        # Shielded, as trio's aclose(): a cancelled close still closes, or a server could
        # lose the frame halfway (hypercorn marks the stream closed before writing it).
        # Bounded, so that a client that does not read cannot hold it for ever: then the
        # frame did not go out, the connection stays open, and the next close tries again.
        with trio.move_on_after(self._config.close_timeout, shield=True):
            await self._send_or_lost(message)
            if self._state is WebSocketState.CONNECTED:  # (the client may have left meanwhile)
                self._state = next_state(self._state, Transition.CLOSE)
                lifetime = self._lifetime
                if lifetime is not None:
                    lifetime.closed_by("server", code)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def ensure_closed(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection unless it is already closed, rejected or disconnected.

        Never raises for a connection that is already over; invalid arguments are still
        refused with ``ValueError``.
        """
        reason = validate_close_reason(reason)
        code = validate_close_code(code)
        state = self._sync()
        if state is WebSocketState.CONNECTED or state is WebSocketState.CONNECTING:
            with contextlib.suppress(WebSocketDisconnect):
                await self.close(code, reason)
        else:
            await trio.lowlevel.checkpoint()

    # -- Receiving ---------------------------------------------------------------------

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
        return text_of(await self._receive_message())

    async def receive_bytes(self) -> bytes:
        """Receive a binary message.

        Raises:
            UnexpectedMessageType: The client sent a text message.
            WebSocketDisconnect: The client has gone.
        """
        return bytes_of(await self._receive_message())

    async def receive_json(self) -> Any:
        """Receive a JSON document, sent as a text or a binary (UTF-8) message.

        Raises:
            json.JSONDecodeError: The message is not valid JSON (``NaN`` and ``Infinity``
                included: Python's json module would take them, JSON does not).
            WebSocketDisconnect: The client has gone.
        """
        return json_of(await self._receive_message())

    async def receive(self) -> Any:
        """Receive a message of the configured ``receive_type``."""
        return self._decode(await self._receive_message())

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[Any]:
        # A plain method returning the receive's coroutine, not a coroutine of its own: an
        # idle connection waits in `async for`, and every frame on that stack stays
        # allocated for the connection's life (about 220 bytes each).
        return self._receive_message(iterating=True)

    async def _before_receive(self) -> None:
        state = self._sync()
        if state is WebSocketState.CONNECTING:
            await self._auto_accept(Transition.RECEIVE)
        elif state is not WebSocketState.DISCONNECTED or self._disconnect_read:
            self._check(Transition.RECEIVE)  # raises
        elif self._handshake is not None:
            # The client left before the handshake was answered: its connect event comes
            # before the disconnect.
            gone = await self._handshake.unanswered_connect()
            if gone is not None:
                raise self._disconnect_event(gone)
        # Else the client has gone, and what it sent before is still to be received.

    # -- Sending -----------------------------------------------------------------------

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
        await self._send_message(text_event(data))

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message.

        Raises:
            TypeError: ``data`` is not bytes-like. Nothing was sent.
            WebSocketDisconnect: The client has gone.
        """
        await self._send_message(bytes_event(data))

    async def send_json(self, data: Any) -> None:
        """Serialize ``data`` to JSON and send it as a text message.

        Raises:
            TypeError: ``data`` is not JSON serializable. Nothing was sent.
            ValueError: ``data`` holds a NaN or infinite float, which JSON cannot carry.
            WebSocketDisconnect: The client has gone.
        """
        await self._send_message(json_event(data))

    async def send(self, message: Any) -> None:
        """Send a message of the configured ``send_type``."""
        encode = self._encode
        if encode is None:
            await self.send_event(message)
        else:
            await self._send_message(encode(message))

    async def _before_send(self) -> None:
        state = self._sync()
        if state is WebSocketState.CONNECTING:
            await self._auto_accept(Transition.SEND)
        elif state is not WebSocketState.CONNECTED:
            self._check(Transition.SEND)  # raises
        if self._status is None:
            await self._before_unreported_send()

    # -- The connection's block: async with ---------------------------------------------

    @property
    def nursery(self) -> trio.Nursery:
        """A nursery for tasks that belong to this connection.

        Open while the connection is (inside ``async with ws``, or while an
        :class:`~trio_bocaws.App` view runs). Tasks started here are cancelled when the
        block ends; an exception in one of them cancels the block and closes the
        connection with 1011. Cancelling it ends the block like any cancellation (1001).

        Raises:
            WebSocketStateError: Outside ``async with ws``.
        """
        if self._lifetime is None:
            raise WebSocketStateError("ws.nursery exists only inside `async with ws`")
        return self._lifetime.nursery

    async def __aenter__(self) -> Self:
        if self._sync() is WebSocketState.CONNECTING:
            await self.accept()
        await enter_block(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        lifetime = self._lifetime
        if lifetime is None:
            raise WebSocketStateError("__aexit__ without a matching __aenter__")
        if lifetime.nested:
            return await lifetime.finish_nested(exc)  # noqa: ASYNC102 (shielded inside)
        try:
            return await lifetime.finish(exc_type, exc, tb)  # noqa: ASYNC102
        finally:
            self._lifetime = None


async def enter_block(ws: WebSocket) -> None:
    """Enter the connection's block without answering the handshake (the App's way: with
    ``auto_accept``, the view may still reject before it first sends or receives)."""
    if ws._lifetime is not None:
        # Nested, typically a view's own `async with ws` inside the App's: the outer block
        # owns the nursery; this one only closes on its way out.
        ws._lifetime.enter_nested()
    else:
        ws._lifetime = await Lifetime.open(ws)


def lifetime_of(ws: WebSocket) -> Lifetime | None:
    """The block ``ws`` is in (its nursery, rooms, cancellation), if it is in one."""
    return ws._lifetime
