"""Publish and subscribe: the broadcast's errors, its config, messages and subscriptions.

The hub (:class:`~trio_bocaws.Broadcast`) fans each message out to local subscribers
without ever waiting for one: each subscriber has a bounded buffer (:class:`Receiver` here,
a room member's in :mod:`trio_bocaws._room_delivery`), and a full buffer either drops its
oldest message or closes that subscriber, as :class:`BroadcastConfig` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from ._errors import TrioBocawsError
from ._room_history import RoomConfig

__all__ = [
    "CATCH_UP",
    "BroadcastConfig",
    "BroadcastError",
    "BroadcastOverflow",
    "Buffered",
    "Message",
    "Overflow",
    "Receiver",
    "Subscription",
    "safe_url",
]

Overflow = Literal["drop_oldest", "close"]


class BroadcastError(TrioBocawsError):
    """The broadcast backend cannot be reached (at startup, or for a publish)."""


class BroadcastOverflow(TrioBocawsError):
    """A subscriber fell so far behind that its buffer overflowed (``on_overflow="close"``)."""


def _positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number above 0, not {value!r}")


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an int of at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class BroadcastConfig:
    """How the hub buffers and reconnects. Immutable; change with :func:`attrs.evolve`.

    Attributes:
        buffer_size: Messages that may wait for each subscriber (each room member). The
            publisher never waits for a slow subscriber; when a buffer is full,
            ``on_overflow`` decides.
        on_overflow: ``"drop_oldest"`` (the default): the oldest waiting message is
            dropped, the subscriber goes on with the newer ones. ``"close"``: the
            subscriber is ended: a room member's connection is closed with 1013 ("try
            again later"), a :class:`Subscription` raises :class:`BroadcastOverflow`.
        publish_timeout: Seconds a publish (each ``room.send``) may wait for Redis; then it
            raises :class:`BroadcastError`. Also how long a subscription (``room.join``)
            waits for Redis to confirm it, and the reader for Redis to answer its keepalive.
        connect_timeout: Seconds Redis may take to answer a connection: at startup (then
            the hub does not start) and at each reconnection (then it tries again).
        keepalive_interval: Seconds of silence from Redis after which the reader checks
            that Redis still answers (a ``PING``, ``publish_timeout`` to answer). A Redis
            that does not is lost, as one that went away is.
        reconnect_delay: Seconds before the first attempt to reconnect to a lost backend;
            doubled at each failure, up to ``max_reconnect_delay``.
        max_reconnect_delay: The longest wait between two attempts.
        rooms: The :class:`RoomConfig` of every room not given one of its own: by
            default, no history and no presence.
        presence_ttl: Through Redis, seconds after which the presence of a worker that
            stopped renewing it (it died, or lost Redis) is removed, and its members'
            leaves announced. Each hub renews its own three times per ``presence_ttl``.
    """

    buffer_size: int = attrs.field(default=256, validator=_positive_int)
    on_overflow: Overflow = attrs.field(
        default="drop_oldest", validator=attrs.validators.in_(("drop_oldest", "close"))
    )
    # Well above the pauses of a healthy Redis (a fork, a slow fsync: up to about two
    # seconds), well below the patience of a person waiting for their message.
    publish_timeout: float = attrs.field(default=5.0, validator=_positive)
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    keepalive_interval: float = attrs.field(default=15.0, validator=_positive)
    reconnect_delay: float = attrs.field(default=0.1, validator=_positive)
    max_reconnect_delay: float = attrs.field(default=5.0, validator=_positive)
    rooms: RoomConfig = attrs.field(
        factory=RoomConfig, validator=attrs.validators.instance_of(RoomConfig)
    )
    presence_ttl: float = attrs.field(default=30.0, validator=_positive)


@attrs.frozen
class Message:
    """A message received on a channel.

    Attributes:
        channel: The channel it was published on.
        data: Text or bytes.
        id: Its id, in a room that keeps history (``None`` elsewhere).
        is_json: Whether ``data`` is JSON text (sent with ``send_json``), in a room that
            keeps history.
    """

    channel: str
    data: str | bytes
    id: str | None = None
    is_json: bool = False


# Put in a room member's buffer when the hub has (re)subscribed after losing its backend:
# what was sent meanwhile never came, and a room that keeps history can send it now.
CATCH_UP: Final = Message("", "")


class Buffered:
    """A subscriber's bounded buffer, filled by the hub without waiting.

    Two kinds: a subscription's :class:`Receiver`, read by one task, and a room member
    (:class:`~trio_bocaws._room_delivery.Member`), sent by the relays. The buffer is a list,
    not a deque: it is short (``buffer_size`` at most, empty most of the time), and an
    empty deque costs ten times the memory, for each member.
    """

    __slots__ = ("buffer", "channels", "closed", "dropped", "limit", "on_drop", "on_overflow")

    def __init__(self, channels: tuple[str, ...], config: BroadcastConfig) -> None:
        self.channels = channels
        self.limit = config.buffer_size
        self.on_overflow = config.on_overflow
        self.buffer: list[Message] = []
        self.closed: BaseException | None = None
        self.dropped = 0
        self.on_drop: Callable[[], None] | None = None  # a room member's, with metrics on

    def put(self, message: Message) -> None:
        if self.closed is not None:
            return
        if len(self.buffer) >= self.limit:
            if self.on_overflow == "close":
                self.close(
                    BroadcastOverflow(
                        f"a subscriber to {', '.join(self.channels)} fell {self.limit}"
                        " messages behind"
                    )
                )
                self.overflowed()
                return
            del self.buffer[0]
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
        self.buffer.append(message)
        self.arrived()

    def arrived(self) -> None:
        """A message is in the buffer."""
        raise NotImplementedError

    def overflowed(self) -> None:
        """Closed for falling ``limit`` behind (with ``on_overflow="close"``)."""

    def catch_up(self) -> None:
        """The hub lost its backend for a while and is back."""

    def close(self, reason: BaseException) -> None:
        raise NotImplementedError


class Receiver(Buffered):
    """A subscription's buffer. One task receives at a time, so the waiting task is kept
    as it is, and woken directly."""

    __slots__ = ("_waiter",)

    def __init__(self, channels: tuple[str, ...], config: BroadcastConfig) -> None:
        super().__init__(channels, config)
        self._waiter: trio.lowlevel.Task | None = None

    def arrived(self) -> None:
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        task, self._waiter = self._waiter, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def close(self, reason: BaseException) -> None:
        self.closed = reason
        self.buffer.clear()
        self._wake()

    async def get(self) -> Message:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self.buffer:
            if self.closed is not None:
                raise self.closed
            if self._waiter is not None:
                raise trio.BusyResourceError("another task is already receiving from it")
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)  # loses nothing if aborted
            parked = True
        message = self.buffer.pop(0)
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


class Subscription:
    """Messages from the channels subscribed to, in order; ``async for`` them."""

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    @property
    def dropped(self) -> int:
        """Messages dropped because this subscriber fell behind (``drop_oldest``)."""
        return self._receiver.dropped

    async def receive(self) -> Message:
        """The next message.

        Raises:
            BroadcastOverflow: With ``on_overflow="close"``, when this subscriber fell
                ``buffer_size`` messages behind.
        """
        return await self._receiver.get()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        return await self._receiver.get()


def safe_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
