"""A connection's block: ``async with ws`` (and every App view) from start to close.

A :class:`Lifetime` holds what exists only while the block runs: the connection's nursery,
the close to send if something outside cancels it (the server's shutdown, the idle timeout,
a room whose member fell behind), the idle timer and the rooms joined. On the way out it
closes the connection as the block's outcome requires (:func:`close_for`), within
``close_timeout``, even when the block was cancelled.

It uses the WebSocket only through the :class:`Closable` protocol (its public API), and
others reach it only through its public methods: the shutdown registry calls
:meth:`Lifetime.shut_down`, a room :meth:`Lifetime.cancel_with`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import attrs
import trio

from ._codecs import ClientJSONError
from ._config import WebSocketConfig
from ._errors import (
    MessageValidationError,
    RejectConnection,
    UnexpectedMessageType,
    WebSocketDisconnect,
    WebSocketStateError,
    leaves,
)
from ._shutdown import server_shutdown_of
from ._state import WebSocketState
from ._typed import close_reason

__all__ = ["Closable", "CloseDecision", "Lifetime", "close_for"]

logger = logging.getLogger("trio_bocaws")


class Closable(Protocol):
    """What a :class:`Lifetime` needs of its WebSocket: public API only."""

    @property
    def scope(self) -> Mapping[str, Any]: ...
    @property
    def config(self) -> WebSocketConfig: ...
    @property
    def state(self) -> WebSocketState: ...
    async def accept(self, subprotocol: str | None = None) -> None: ...
    async def reject(
        self, status: int = 403, *, body: bytes | str = b"", headers: Any = None
    ) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@attrs.frozen
class CloseDecision:
    """How a block that ended closes its connection.

    Attributes:
        code: The close code (or, for an unanswered handshake, see ``refusal``).
        reason: The close reason.
        cancelled: The block was cancelled (a handshake still unanswered gets HTTP 503).
        refusal: A :class:`~trio_bocaws.RejectConnection` the block raised.
        swallow: Whether the block's exception ends there (a caught close code, a refusal).
    """

    code: int
    reason: str = ""
    cancelled: bool = False
    refusal: RejectConnection | None = None
    swallow: bool = False


def close_for(
    failure: BaseException | None,
    config: WebSocketConfig,
    cancel_close: tuple[int, str] | None = None,
) -> CloseDecision:
    """The close that the block's outcome calls for.

    Args:
        failure: What the block raised (``None`` if it ended normally).
        config: The connection's options (caught close codes, cancellation code).
        cancel_close: The close asked for by whoever cancelled the block (shutdown, idle
            timeout, a room), if anyone did.
    """
    if failure is None:
        if cancel_close is not None:
            return CloseDecision(*cancel_close, cancelled=True)
        return CloseDecision(1000)
    errors = leaves(failure)
    if all(isinstance(leaf, WebSocketDisconnect) for leaf in errors):
        caught = config.caught_close_codes
        swallow = all(leaf.code in caught for leaf in errors)  # type: ignore[attr-defined]
        return CloseDecision(1000 if swallow else 1011, swallow=swallow)
    if len(errors) == 1 and isinstance(errors[0], RejectConnection):
        return CloseDecision(1008, refusal=errors[0], swallow=True)
    if any(isinstance(leaf, trio.Cancelled) for leaf in errors) or not any(
        isinstance(leaf, Exception) for leaf in errors
    ):
        # A timeout, the server's shutdown, KeyboardInterrupt.
        code, reason = cancel_close or (config.cancelled_close_code, config.cancelled_close_reason)
        return CloseDecision(code, reason, cancelled=True)
    if len(errors) == 1:
        # The client sent what the view cannot take: its fault, not the server's.
        error = errors[0]
        if isinstance(error, UnexpectedMessageType):
            return CloseDecision(1003, f"expected a {error.expected} message")
        if isinstance(error, ClientJSONError):
            return CloseDecision(1007, "invalid JSON")
        if isinstance(error, MessageValidationError):
            return CloseDecision(1007, close_reason(error))
    return CloseDecision(1011)


def _errors_in(error: BaseException | None) -> set[int]:
    if error is None:
        return set()
    return {id(leaf) for leaf in leaves(error) if not isinstance(leaf, trio.Cancelled)}


class Membership(Protocol):
    """A room the connection joined (:class:`~trio_bocaws._room_delivery.Member`)."""

    async def connection_ended(self) -> None:
        """The block is over; shielded and bounded by the room."""


class Lifetime:
    """The block of one connection; made by :meth:`open`, ended by :meth:`finish`."""

    __slots__ = (
        "_cancel_close",
        "_depth",
        "_manager",
        "_received_at",
        "_ws",
        "nursery",
        "record",
        "rooms",
    )

    def __init__(self, ws: Closable, manager: Any, nursery: trio.Nursery) -> None:
        self._ws = ws
        self._manager = manager
        self.nursery = nursery
        """The connection's nursery (``ws.nursery``)."""
        self._depth = 0  # nested `async with ws` blocks inside the outermost one
        self._cancel_close: tuple[int, str] | None = None
        self._received_at: float | None = None  # only with an idle timeout
        self.rooms: dict[str, Membership] | None = None
        """The broadcast rooms joined, by channel (kept by :mod:`trio_bocaws._room`); each
        is told when the block ends."""
        self.record: Any = None
        """Where the connection's messages and close are reported
        (:class:`~trio_bocaws._connection_log.ConnectionRecord`), when an App records
        metrics or logs connections. Here, not on the WebSocket: this object has room for
        one more field in its allocation, the WebSocket has none."""

    @classmethod
    async def open(cls, ws: Closable) -> Lifetime:
        """Open the connection's nursery and start listening for the server's shutdown."""
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self = cls(ws, manager, nursery)
        shutdown = server_shutdown_of(ws.scope)
        if shutdown is not None:
            shutdown.watch(self)
        idle_timeout = ws.config.idle_timeout
        if idle_timeout is not None:
            self._received_at = trio.current_time()
            nursery.start_soon(self._close_when_idle, idle_timeout)
        return self

    def enter_nested(self) -> None:
        self._depth += 1

    @property
    def nested(self) -> bool:
        return self._depth > 0

    def message_received(self) -> None:
        """Restart the idle timer (a no-op without an idle timeout); count the message."""
        if self._received_at is not None:
            self._received_at = trio.current_time()
        if self.record is not None:
            self.record.received += 1

    def closed_by(self, side: str, code: int) -> None:
        """The connection was closed first by ``side`` with ``code``."""
        if self.record is not None:
            self.record.closed(side, code)

    def refused(self, status: int) -> None:
        """The handshake was refused with HTTP ``status`` (by the view, or as the block
        ended unanswered)."""
        if self.record is not None:
            self.record.refused(status)

    def cancel_with(self, code: int, reason: str) -> None:
        """Cancel the block and its tasks; the connection closes with ``code``, ``reason``."""
        if self._cancel_close is None:
            self._cancel_close = (code, reason)
            self.nursery.cancel_scope.cancel()

    def shut_down(self) -> None:
        """The server is stopping: cancel, and close with the shutdown code."""
        config = self._ws.config
        self.cancel_with(config.shutdown_close_code, config.shutdown_close_reason)

    async def _close_when_idle(self, limit: float) -> None:
        # _received_at moves on with every message; wake when it may have gone stale.
        while True:
            last = self._received_at
            assert last is not None
            if trio.current_time() >= last + limit:
                break
            await trio.sleep_until(last + limit)
        self.cancel_with(1001, f"idle: no message for {limit:g} seconds")

    async def finish_nested(self, exc: BaseException | None) -> bool:
        """End a nested block: close as its outcome requires; whether to swallow ``exc``."""
        self._depth -= 1
        return await self._close(exc)

    async def finish(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """End the outermost block (as ``__aexit__``): stop its tasks, then close."""
        shutdown = server_shutdown_of(self._ws.scope)
        if shutdown is not None:
            shutdown.unwatch(self)
        scope = self.nursery.cancel_scope
        if scope.cancel_called and self._cancel_close is None:
            # The view cancelled its own nursery: a cancellation like any other.
            config = self._ws.config
            self._cancel_close = (config.cancelled_close_code, config.cancelled_close_reason)
        # The body is over: stop any task started for this connection.
        scope.cancel()
        try:
            # Not shielded: the nursery must close in the cancel scope it opened in. Its
            # tasks were just cancelled, so this is brief.
            await self._manager.__aexit__(exc_type, exc, tb)  # noqa: ASYNC102
        except BaseException as raised:
            # A nursery wraps the body's exception in a group (and copies groups). When the
            # group holds nothing else, let the body's own exception propagate, unwrapped.
            same = exc is not None and _errors_in(raised) == _errors_in(exc)
            failure: BaseException | None = exc if same else raised
        else:
            failure = None  # the nursery absorbed its own cancellation
        if self.rooms:
            for membership in list(self.rooms.values()):
                await membership.connection_ended()  # noqa: ASYNC102 (shielded inside)
        swallow = await self._close(failure)  # noqa: ASYNC102 (shielded inside)
        if failure is None or failure is exc:
            return failure is None or swallow
        raise failure

    async def _close(self, failure: BaseException | None) -> bool:
        ws = self._ws
        decision = close_for(failure, ws.config, self._cancel_close)
        state = ws.state
        if state is WebSocketState.CONNECTED or state is WebSocketState.CONNECTING:
            await _close_within_timeout(ws, decision)
        return decision.swallow


async def _close_within_timeout(ws: Closable, decision: CloseDecision) -> None:
    timeout = ws.config.close_timeout
    # Shielded so that a cancelled block still sends its close frame; bounded so that a
    # client that stopped reading cannot hold the block here forever.
    with trio.move_on_after(timeout, shield=True) as scope:
        try:
            if ws.state is WebSocketState.CONNECTING:
                await _answer_unanswered(ws, decision)
            else:
                await ws.close(decision.code, decision.reason)
        except (WebSocketDisconnect, WebSocketStateError):
            pass  # the client left first, or the block closed it meanwhile
    if scope.cancelled_caught or ws.state is WebSocketState.CONNECTED:
        # (close() gives up within its own close_timeout and leaves the state as it was.)
        logger.warning("closing %r took longer than close_timeout=%ss; gave up", ws, timeout)


async def _answer_unanswered(ws: Closable, decision: CloseDecision) -> None:
    """The block ended without answering the handshake: answer it."""
    refusal = decision.refusal
    if refusal is not None:
        await ws.reject(refusal.status, body=refusal.body, headers=refusal.headers)
    elif decision.cancelled:
        await ws.reject(503)
    elif ws.config.auto_accept:
        # As Bocadillo, which accepted before the view ran, would have.
        await ws.accept()
        await ws.close(decision.code, decision.reason)
    else:
        await ws.reject(500 if decision.code != 1000 else 403)
