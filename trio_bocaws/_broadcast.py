"""Broadcast: publish to named channels, subscribe to them, and rooms of WebSockets.

One :class:`Broadcast` hub per process. Its backend carries messages between processes:
``memory://`` keeps them in this process (one worker), ``redis://host:port/db`` goes
through Redis pub/sub, so that every worker (and machine) sees every message. Within the
process the hub fans each message out to local subscribers without ever waiting for one:
each subscriber has a bounded buffer, and a full buffer either drops its oldest message
or closes that subscriber, as :class:`BroadcastConfig` says.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from . import _room_presence as presence
from . import _room_redis
from ._errors import TrioBocawsError, WebSocketDisconnect, WebSocketStateError, leaves
from ._room_history import (
    HistoryGap,
    MemoryHistory,
    RoomConfig,
    check_since,
    envelope,
    parse_id,
)
from ._room_presence import PRESENCE_PREFIX, PresenceWatch
from ._websocket import lifetime_of

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._websocket import WebSocket

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "Broadcast",
    "BroadcastConfig",
    "BroadcastError",
    "BroadcastOverflow",
    "Message",
    "Room",
    "Subscription",
]

logger = logging.getLogger("trio_bocaws")

Overflow = Literal["drop_oldest", "close"]
# Over Redis, a payload is one byte saying what it is, then the message.
_TEXT: Final = b"t"
_BYTES: Final = b"b"
# A message of a room that keeps history: the kind (T text, J JSON text, B bytes), then its
# id, a space, and the message.
_KINDS: Final = {b"T": (True, False), b"J": (True, True), b"B": (False, False)}
_ROOM_PREFIX: Final = "trio_bocaws.room:"


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
_CATCH_UP: Final = Message("", "")


class _Receiver:
    """One subscriber's bounded buffer, filled by the hub without waiting.

    One task receives at a time (a room member's forwarder, or a subscription's reader),
    so the waiting task is kept as it is, and woken directly: a room of 10,000 members
    wakes 10,000 of them for each message. The buffer is a list, not a deque: it is short
    (``buffer_size`` at most, empty most of the time), and an empty deque costs ten
    times the memory, for each member.
    """

    __slots__ = (
        "_buffer",
        "_waiter",
        "_when_overflowing",
        "catches_up",
        "channels",
        "closed",
        "dropped",
        "envelope",
        "limit",
        "on_drop",
        "on_overflow",
        "presence_key",
    )

    def __init__(
        self,
        channels: tuple[str, ...],
        config: BroadcastConfig,
        when_overflowing: Callable[[_Receiver], None] | None = None,
    ) -> None:
        self.channels = channels
        self.limit = config.buffer_size
        self.on_overflow = config.on_overflow
        self._when_overflowing = when_overflowing
        self._buffer: list[Message] = []
        self._waiter: trio.lowlevel.Task | None = None
        self.closed: BaseException | None = None
        self.dropped = 0
        # For room members: send each message in the id envelope; who it is, for presence.
        self.envelope = False
        self.presence_key: str | None = None
        self.catches_up = False
        self.on_drop: Callable[[], None] | None = None  # a room member's, with metrics on

    def put(self, message: Message) -> None:
        if self.closed is not None:
            return
        if len(self._buffer) >= self.limit:
            if self.on_overflow == "close":
                self.overflowed()
                return
            del self._buffer[0]
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
        self._buffer.append(message)
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        task, self._waiter = self._waiter, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def catch_up(self) -> None:
        """Ask the member to fetch what it missed (beyond the bound: it is one marker)."""
        if self.closed is None and self.catches_up:
            self._buffer.append(_CATCH_UP)
            self._wake()

    def overflowed(self) -> None:
        self.close(
            BroadcastOverflow(
                f"a subscriber to {', '.join(self.channels)} fell {self.limit} messages behind"
            )
        )
        if self._when_overflowing is not None:
            self._when_overflowing(self)

    def close(self, reason: BaseException) -> None:
        self.closed = reason
        self._buffer.clear()
        self._wake()

    async def get(self) -> Message:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._buffer:
            if self.closed is not None:
                raise self.closed
            if self._waiter is not None:
                raise trio.BusyResourceError("another task is already receiving from it")
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)  # loses nothing if aborted
            parked = True
        message = self._buffer.pop(0)
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


class Subscription:
    """Messages from the channels subscribed to, in order; ``async for`` them."""

    def __init__(self, receiver: _Receiver) -> None:
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


class _MemoryBackend:
    """Messages stay in this process."""

    def __init__(self, hub: Broadcast) -> None:
        self._hub = hub
        self._histories: dict[str, MemoryHistory] = {}
        self._totals: dict[str, Counter[str]] = {}

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        self._hub._set_connected(True)
        task_status.started()
        await trio.sleep_forever()

    async def publish(self, channel: str, data: str | bytes) -> None:
        await trio.lowlevel.checkpoint()
        self._hub._deliver(channel, data)

    async def subscribe(self, channel: str) -> None:
        await trio.lowlevel.checkpoint()

    def forget(self, channel: str) -> None:
        pass

    async def publish_kept(
        self, room: Room, data: str | bytes, is_json: bool, config: RoomConfig
    ) -> str:
        await trio.lowlevel.checkpoint()
        history = self._histories.get(room.name)
        if history is None:
            history = self._histories[room.name] = MemoryHistory()
        message_id = history.add(data, is_json, config)
        self._hub._deliver(room.channel, data, message_id, is_json)
        return message_id

    async def read_history(
        self, room: Room, since: str | None, limit: int | None, config: RoomConfig
    ) -> tuple[str | None, str | None, list[tuple[str, str | bytes, bool]]]:
        """The oldest kept id, the last issued one, and the entries asked for."""
        await trio.lowlevel.checkpoint()
        history = self._histories.get(room.name)
        if history is None:
            return None, None, []
        history.trim(config)
        oldest, last = history.bounds()
        after = None if since is None else parse_id(since)
        return oldest, last, history.read(after, limit)

    async def sync_presence(self, room: Room, counts: Counter[str]) -> dict[str, int]:
        """Make ``counts`` this hub's presence in ``room``; the totals over every hub."""
        await trio.lowlevel.checkpoint()
        before = self._totals.get(room.name, Counter())
        after = +counts  # this hub is the only one
        if after:
            self._totals[room.name] = after
        else:
            self._totals.pop(room.name, None)
        for event in presence.changes(before, after):
            self._hub._deliver(room.presence_channel, event)
        return dict(after)


class _RedisBackend:
    """Redis pub/sub through coredis: every process subscribed to a channel gets it.

    No wait for Redis is open-ended, so that a Redis that stops answering (a hung host, a
    network partition) is an error, not a hang. coredis bounds each of its own waits (an
    answer: ``stream_timeout``; a TCP connection; a subscription's confirmation; the
    keepalive), and ends them cleanly, which a cancellation from outside does not always
    do. The hub bounds each whole operation: a publish, a (re)connection.
    """

    def __init__(self, hub: Broadcast, url: str, cluster: bool = False) -> None:
        try:
            import coredis
        except ImportError:  # pragma: no cover - depends on the install
            raise BroadcastError(
                "the redis:// backend needs coredis: pip install 'trio-bocaws[redis]'"
            ) from None
        config = hub.config
        self._hub = hub
        self._name = safe_url(url)
        # A Redis Cluster: sharded pub/sub (SPUBLISH, SSUBSCRIBE; Redis 7), so that each
        # message goes to the node that owns its channel's slot, not to every node.
        self.cluster = cluster
        self._client: Any
        if cluster:
            self._client = _cluster_client(url, config)
        else:
            self._client = coredis.Redis.from_url(
                url, stream_timeout=config.publish_timeout, connect_timeout=config.connect_timeout
            )
        self._pubsub: Any = None
        scripts: tuple[str, ...] = (_room_redis.ADD, _room_redis.READ, _room_redis.SYNC)
        if cluster:
            scripts = tuple(s.replace("'PUBLISH'", "'SPUBLISH'") for s in scripts)
        self._add_script = self._client.register_script(scripts[0])
        self._read_script = self._client.register_script(scripts[1])
        self._sync_script = self._client.register_script(scripts[2])
        # Channels Redis is subscribed to for us; those no longer wanted are dropped by the
        # reader when it next looks (a late unsubscribe only costs a few ignored messages).
        self._stale = trio.Event()

    def _silent(self, seconds: float, setting: str) -> str:
        return f"{self._name} did not answer within {seconds:g} s ({setting})"

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        """Connect, report it, then read for the life of the hub, reconnecting when Redis
        goes away. The client lives in this task, from connecting to closing."""
        import coredis.exceptions

        timeout = self._hub.config.connect_timeout
        async with self._client:
            with trio.move_on_after(timeout) as attempt:
                try:
                    await self._client.ping()
                except (OSError, coredis.exceptions.RedisError) as exc:
                    if not attempt.cancel_called:
                        raise BroadcastError(f"cannot connect to {self._name}: {exc!r}") from exc
            if attempt.cancel_called:
                # The deadline passed: whatever coredis made of the cancellation, the cause
                # is a Redis that does not answer.
                raise BroadcastError(self._silent(timeout, "connect_timeout"))
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew_presence)
                await self._read_forever()

    async def _read_forever(self) -> None:
        from coredis.retry import NoRetryPolicy

        config = self._hub.config
        delay = config.reconnect_delay
        while True:
            # Until subscribed, an attempt has connect_timeout; then reading has no end.
            attempt = trio.CancelScope(deadline=trio.current_time() + config.connect_timeout)
            error: BaseException | None = None
            try:
                with attempt:
                    open_pubsub = (
                        self._client.sharded_pubsub if self.cluster else self._client.pubsub
                    )
                    pubsub = open_pubsub(
                        retry_policy=NoRetryPolicy(),
                        subscription_timeout=config.publish_timeout,
                        max_idle_seconds=config.keepalive_interval,
                    )
                    async with pubsub:
                        self._pubsub = pubsub
                        channels = self._hub._wanted_channels()
                        if channels:
                            await pubsub.subscribe(*channels)
                        attempt.deadline = math.inf
                        self._hub._set_connected(True)
                        delay = config.reconnect_delay
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._drop_stale, pubsub)
                            await self._read(pubsub)
            except Exception as exc:
                # A lost connection shows up as coredis', anyio's or the OS's own error,
                # often several at once from coredis' task groups: whichever it is, the
                # reader starts over.
                error = leaves(exc)[0]
            finally:
                self._pubsub = None
                self._hub._set_connected(False)
            if attempt.cancel_called:
                logger.warning(
                    "broadcast: %s; trying again in %g s",
                    self._silent(config.connect_timeout, "connect_timeout"),
                    delay,
                )
            else:
                self._lost(error)
            await trio.sleep(delay)
            delay = min(delay * 2, config.max_reconnect_delay)

    def _lost(self, exc: BaseException | None) -> None:
        logger.warning("broadcast: lost %s (%r); reconnecting", self._name, exc)

    async def _read(self, pubsub: Any) -> None:
        while True:
            # get_message, not `async for`: coredis ends the iteration while nothing is
            # subscribed, and a hub may have no subscribers for a while.
            message = await pubsub.get_message()
            if message is None or message["type"] not in ("message", "smessage"):
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode("utf-8")
            payload = message["data"]
            kind, data = payload[:1], payload[1:]
            kept = _KINDS.get(kind)
            if kept is None:
                self._hub._deliver(channel, data.decode("utf-8") if kind == _TEXT else bytes(data))
                continue
            is_text, is_json = kept
            message_id, _, data = data.partition(b" ")
            self._hub._deliver(
                channel,
                data.decode("utf-8") if is_text else bytes(data),
                message_id.decode("ascii"),
                is_json,
            )

    async def _drop_stale(self, pubsub: Any) -> None:
        while True:
            await self._stale.wait()
            self._stale = trio.Event()
            wanted = set(self._hub._wanted_channels())
            subscribed = {
                c.decode("utf-8") if isinstance(c, bytes) else c for c in pubsub.channels
            }
            stale = subscribed - wanted
            if stale:
                await pubsub.unsubscribe(*stale)

    async def publish(self, channel: str, data: str | bytes) -> None:
        import coredis.exceptions

        payload = _TEXT + data.encode("utf-8") if isinstance(data, str) else _BYTES + data
        timeout = self._hub.config.publish_timeout
        with trio.move_on_after(timeout) as attempt:
            try:
                if self.cluster:
                    await self._client.spublish(channel, payload)
                else:
                    await self._client.publish(channel, payload)
                return
            except TimeoutError:
                pass  # coredis' own bound on the answer: the same timeout as ours
            except (OSError, coredis.exceptions.RedisError) as exc:
                if not attempt.cancel_called:
                    raise BroadcastError(f"cannot publish to {self._name}: {exc!r}") from exc
        # Redis may have the command (a frozen server runs it when it resumes): the message
        # is not lost for sure, only not confirmed.
        raise BroadcastError(
            f"{self._silent(timeout, 'publish_timeout')}: the message to {channel!r} is not "
            "confirmed"
        )

    async def subscribe(self, channel: str) -> None:
        import coredis.exceptions

        pubsub = self._pubsub
        if pubsub is None:
            await trio.lowlevel.checkpoint()  # subscribed when the reader reconnects
            return
        known = {c.decode("utf-8") if isinstance(c, bytes) else c for c in pubsub.channels}
        if channel not in known:
            try:
                # coredis waits at most subscription_timeout (publish_timeout) for Redis.
                await pubsub.subscribe(channel)
            except (OSError, coredis.exceptions.RedisError) as exc:
                # The subscriber stays: a frozen Redis runs the SUBSCRIBE when it resumes,
                # and a lost connection is replaced by the reader, which subscribes to every
                # wanted channel. Until then, nothing arrives; as in any outage.
                logger.warning(
                    "broadcast: %s did not confirm the subscription to %r (%r)",
                    self._name,
                    channel,
                    exc,
                )

    def forget(self, channel: str) -> None:
        self._stale.set()

    async def _run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a room script, bounded as a publish is (``publish_timeout``)."""
        import coredis.exceptions

        timeout = self._hub.config.publish_timeout
        with trio.move_on_after(timeout) as attempt:
            try:
                return await script(keys=keys, args=args)
            except TimeoutError:
                pass  # coredis' own bound on the answer: the same timeout as ours
            except (OSError, coredis.exceptions.RedisError) as exc:
                if not attempt.cancel_called:
                    raise BroadcastError(f"cannot reach {self._name}: {exc!r}") from exc
        raise BroadcastError(
            f"{self._silent(timeout, 'publish_timeout')}: the room command is not confirmed"
        )

    async def publish_kept(
        self, room: Room, data: str | bytes, is_json: bool, config: RoomConfig
    ) -> str:
        kind = b"B" if isinstance(data, bytes) else b"J" if is_json else b"T"
        args = [
            room.channel,
            kind,
            data,
            "" if config.history_size is None else config.history_size,
            _milliseconds(config.history_age),
        ]
        result = await self._run_script(
            self._add_script, [_room_redis.history_key(room.name)], args
        )
        return _text(result)

    async def read_history(
        self, room: Room, since: str | None, limit: int | None, config: RoomConfig
    ) -> tuple[str | None, str | None, list[tuple[str, str | bytes, bool]]]:
        args = [
            "" if since is None else since,
            "" if limit is None else limit,
            _milliseconds(config.history_age),
        ]
        oldest, last, raw, newest_first = await self._run_script(
            self._read_script, [_room_redis.history_key(room.name)], args
        )
        entries = []
        for message_id, fields in raw:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            is_text, is_json = _KINDS[bytes(values[b"k"])]
            data = values[b"d"]
            entries.append(
                (_text(message_id), data.decode("utf-8") if is_text else bytes(data), is_json)
            )
        if _text(newest_first) == "1":
            entries.reverse()
        return _text(oldest) or None, _text(last) or None, entries

    async def sync_presence(self, room: Room, counts: Counter[str]) -> dict[str, int]:
        workers, totals, mine, prefix = _room_redis.presence_keys(room.name, self._hub.worker)
        ttl = _milliseconds(self._hub.config.presence_ttl)
        args: list[Any] = [self._hub.worker, ttl, room.presence_channel, prefix]
        for key, count in counts.items():
            if count > 0:
                args += [key, count]
        result = await self._run_script(self._sync_script, [workers, totals, mine], args)
        return {
            _text(key): int(count) for key, count in zip(result[::2], result[1::2], strict=True)
        }

    async def _renew_presence(self) -> None:
        """Renew this hub's presence, and clear dead workers' from the rooms it watches."""
        while True:
            await trio.sleep(self._hub.config.presence_ttl / 3)
            for name in self._hub._presence_rooms():
                try:
                    await self._hub._sync_presence(name)
                except BroadcastError as exc:
                    logger.warning("broadcast: cannot renew presence in %r (%s)", name, exc)


def _cluster_client(url: str, config: BroadcastConfig) -> Any:
    """A coredis cluster client from ``redis+cluster://[user:password@]host:port``: the
    node it names is the first it asks for the cluster's layout."""
    import coredis
    from coredis.connection import TCPLocation

    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(
            f"a Redis Cluster URL names a node: redis+cluster://host:port, not {url!r}"
        )
    return coredis.RedisCluster(
        startup_nodes=[TCPLocation(parts.hostname, parts.port or 6379)],
        username=parts.username,
        password=parts.password,
        ssl=parts.scheme == "rediss+cluster",
        stream_timeout=config.publish_timeout,
        connect_timeout=config.connect_timeout,
    )


def safe_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _PresenceSync:
    """The syncs of one room's presence with the backend, one at a time, numbered."""

    __slots__ = ("finished", "lock", "started", "totals")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.started = 0
        self.finished = 0
        self.totals: dict[str, int] | None = None


class Broadcast:
    """A hub for publishing to channels and subscribing to them.

    Args:
        url: ``memory://`` (the default: this process only) or
            ``redis://host:port/db`` (every process that uses the same Redis; needs the
            ``redis`` extra, ``pip install 'trio-bocaws[redis]'``).
        config: :class:`BroadcastConfig`.

    Give it to :class:`~trio_bocaws.App` (``App(broadcast=hub)``) and it connects at
    startup (a backend it cannot reach stops the server from starting), runs its reader in
    the app's nursery and closes at shutdown. Outside an App, use ``async with hub:``.

    Raises:
        ValueError: The URL's scheme is neither ``memory`` nor ``redis``.
    """

    def __init__(self, url: str = "memory://", *, config: BroadcastConfig | None = None) -> None:
        scheme = urlsplit(url).scheme
        self.url = url
        self.config = BroadcastConfig() if config is None else config
        self._receivers: dict[str, set[_Receiver]] = {}
        self._room_configs: dict[str, RoomConfig] = {}
        # Presence: this hub's connections per key in each room, the rooms watched here
        # (whose dead workers this hub clears), and each room's syncs with the backend.
        self._presence: dict[str, Counter[str]] = {}
        self._watched: Counter[str] = Counter()
        self._presence_syncs: dict[str, _PresenceSync] = {}
        self.worker = secrets.token_hex(8)
        self._connected = False
        self._connected_event = trio.Event()
        self._running: trio.CancelScope | None = None
        self._nursery_manager: Any = None
        self._metrics: Metrics | None = None  # set by an App with metrics on
        self._backend: _MemoryBackend | _RedisBackend
        if scheme == "memory":
            self._backend = _MemoryBackend(self)
        elif scheme in ("redis", "rediss"):
            self._backend = _RedisBackend(self, url)
        elif scheme in ("redis+cluster", "rediss+cluster"):
            self._backend = _RedisBackend(self, url, cluster=True)
        else:
            raise ValueError(
                f"unknown broadcast backend {url!r}: use memory:// or redis://host:port/db"
                " (redis+cluster://host:port for a Redis Cluster)"
            )

    def __repr__(self) -> str:
        state = "connected" if self._connected else "not connected"
        return f"<Broadcast {safe_url(self.url)} {state}>"

    # -- Life ------------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Connect, and run the reader in ``nursery`` until :meth:`aclose`.

        Raises:
            BroadcastError: The backend cannot be reached, or did not answer within
                ``connect_timeout``.
        """
        self._running = trio.CancelScope()
        try:
            await nursery.start(self._run, self._running)
        except BaseExceptionGroup as group:
            # Raised before the reader reported it had started: a failed connection.
            errors = [error for error in leaves(group) if not isinstance(error, trio.Cancelled)]
            if len(errors) == 1:
                raise errors[0] from None
            raise

    async def _run(self, scope: trio.CancelScope, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            try:
                await self._backend.run(task_status)
            except BaseException as exc:
                if not scope.cancel_called:
                    raise
                # Closing: coredis' teardown of its connections raises errors of its own
                # (writing to a closed stream) beside the cancellation. They mean nothing
                # once the hub is closing; only an interrupt must get through.
                interrupts = [
                    e for e in leaves(exc) if not isinstance(e, (Exception, trio.Cancelled))
                ]
                if interrupts:
                    raise
                logger.debug("broadcast: closed %s", self.url, exc_info=exc)

    def close(self) -> None:
        """Stop the reader, which disconnects. Subscriptions get no more messages."""
        if self._running is not None:
            self._running.cancel()
            self._running = None

    async def aclose(self) -> None:
        """As :meth:`close`, for ``async with``-style cleanup."""
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Broadcast:
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        try:
            await self.start(nursery)
        except BaseException:
            nursery.cancel_scope.cancel()
            # A nursery closes in the scope it opened in; its only task was just cancelled.
            await self._nursery_manager.__aexit__(None, None, None)  # noqa: ASYNC102
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self.close()
        # As above: the reader was just cancelled, so this only collects it.
        result: bool | None = await self._nursery_manager.__aexit__(*exc_info)  # noqa: ASYNC102
        return result

    @property
    def connected(self) -> bool:
        """Whether the backend is connected (and, for Redis, subscribed) right now."""
        return self._connected

    async def wait_connected(self) -> None:
        """Wait until the backend is connected and subscriptions are in place."""
        while not self._connected:
            await self._connected_event.wait()
        await trio.lowlevel.checkpoint()

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if connected:
            self._connected_event.set()
            for members in self._receivers.values():
                for receiver in members:
                    receiver.catch_up()
        elif self._connected_event.is_set():
            self._connected_event = trio.Event()

    # -- Publishing and subscribing ---------------------------------------------------------

    async def publish(self, channel: str, data: str | bytes) -> None:
        """Send ``data`` (text or bytes) to every subscriber of ``channel``, in every process
        on the same backend.

        Raises:
            BroadcastError: The backend cannot be reached (Redis is down: the message is
                not sent; nothing is queued for later), or did not answer within
                ``publish_timeout`` (the message is not confirmed: a frozen Redis that
                had it may still deliver it when it resumes).
            TypeError: ``data`` is neither ``str`` nor ``bytes``.
        """
        if not isinstance(data, (str, bytes)):
            raise TypeError(f"publish() takes str or bytes, not {type(data).__name__}")
        await self._backend.publish(channel, data)

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[Subscription]:
        """Subscribe to ``channels`` for the ``async with`` block.

        Messages published after this is entered are delivered; leaving the block (also by
        cancellation) unsubscribes. While Redis is away or does not answer (then entering
        waits ``publish_timeout`` at most), the subscription is made when it is back.
        """
        if not channels:
            raise ValueError("subscribe() needs at least one channel")
        receiver = await self._add(channels)
        try:
            yield Subscription(receiver)
        finally:
            self._remove(receiver)

    async def _add(
        self,
        channels: Iterable[str],
        when_overflowing: Callable[[_Receiver], None] | None = None,
    ) -> _Receiver:
        names = tuple(channels)
        receiver = _Receiver(names, self.config, when_overflowing)
        for channel in names:
            self._receivers.setdefault(channel, set()).add(receiver)
        try:
            for channel in names:
                await self._backend.subscribe(channel)
        except BaseException:
            self._remove(receiver)
            raise
        return receiver

    def _remove(self, receiver: _Receiver) -> None:
        for channel in receiver.channels:
            members = self._receivers.get(channel)
            if members is None:
                continue
            members.discard(receiver)
            if not members:
                del self._receivers[channel]
                self._backend.forget(channel)

    def _wanted_channels(self) -> list[str]:
        return list(self._receivers)

    def _deliver(
        self,
        channel: str,
        data: str | bytes,
        message_id: str | None = None,
        is_json: bool = False,
    ) -> None:
        members = self._receivers.get(channel)
        if not members:
            return
        message = Message(channel, data, message_id, is_json)
        for receiver in list(members):
            receiver.put(message)

    def subscribers(self, channel: str) -> int:
        """Local subscribers of ``channel`` (in this process)."""
        return len(self._receivers.get(channel, ()))

    # -- Rooms -----------------------------------------------------------------------------

    def room(self, name: str, *, config: RoomConfig | None = None) -> Room:
        """The room called ``name`` (a channel of WebSockets).

        Args:
            name: The room's name.
            config: This room's :class:`RoomConfig` (history, presence), instead of the
                hub's ``BroadcastConfig.rooms``. The hub remembers it: later calls
                without ``config`` get the same room.

        Raises:
            ValueError: ``config`` differs from the one this room was already given.
        """
        if self._cluster and ("{" in name or "}" in name):
            raise ValueError(
                f"room {name!r}: on a Redis Cluster, a room name has no braces (the name is"
                " its keys' hash tag)"
            )
        if config is not None:
            if not isinstance(config, RoomConfig):
                raise TypeError(f"config must be a RoomConfig, not {type(config).__name__}")
            known = self._room_configs.setdefault(name, config)
            if known != config:
                raise ValueError(f"room {name!r} already has another config: {known!r}")
        return Room(self, name)

    @property
    def _cluster(self) -> bool:
        return isinstance(self._backend, _RedisBackend) and self._backend.cluster

    def _room_config(self, name: str) -> RoomConfig:
        return self._room_configs.get(name, self.config.rooms)

    def _presence_rooms(self) -> list[str]:
        return list(self._presence.keys() | self._watched.keys())

    async def _sync_presence(self, name: str) -> dict[str, int]:
        """Tell the backend this hub's presence in room ``name``; the totals.

        Calls that wait while a sync is running share the next one: it starts after they
        were called, so its counts include theirs, and its totals are as fresh. A thousand
        connections that leave at once (a shutdown) cost a few round trips, not a thousand.
        """
        sync = self._presence_syncs.get(name)
        if sync is None:
            sync = self._presence_syncs[name] = _PresenceSync()
        ticket = sync.started
        async with sync.lock:
            if sync.finished > ticket and sync.totals is not None:
                await trio.lowlevel.checkpoint()
                return dict(sync.totals)
            sync.started += 1
            number = sync.started
            # Taken under the lock: a later count never reaches the backend before an
            # earlier one.
            counts = Counter(self._presence.get(name, ()))
            totals = await self._backend.sync_presence(Room(self, name), counts)
            sync.finished, sync.totals = number, totals
            return dict(totals)

    def _count_presence(self, name: str, key: str, delta: int) -> None:
        counts = self._presence.setdefault(name, Counter())
        counts[key] += delta
        if counts[key] <= 0:
            del counts[key]
            if not counts:
                del self._presence[name]


class Room:
    """WebSockets that receive every message sent to the room, in every process.

    ::

        room = hub.room("lobby")
        await room.join(ws)          # until the connection ends (or room.leave(ws))
        await room.send_json({"user": "ada", "text": "hi"})   # encoded once

    A room configured to keep history (:class:`RoomConfig`) gives each message an id,
    keeps the latest ones, and lets a member resume after the last id it saw; one
    configured for presence knows who is in it, over every worker.
    """

    def __init__(self, hub: Broadcast, name: str) -> None:
        self.hub = hub
        self.name = name
        # On a Redis Cluster, the room's name is the channels' hash tag, as it is its keys':
        # a script that writes a key and publishes runs on one node.
        tag = f"{{{name}}}" if hub._cluster else name
        self.channel = _ROOM_PREFIX + tag
        self.presence_channel = PRESENCE_PREFIX + tag

    def __repr__(self) -> str:
        return f"<Room {self.name!r} on {safe_url(self.hub.url)}>"

    @property
    def config(self) -> RoomConfig:
        """This room's :class:`RoomConfig`."""
        return self.hub._room_config(self.name)

    @property
    def members(self) -> int:
        """WebSockets of this process in the room."""
        return self.hub.subscribers(self.channel)

    async def join(
        self,
        ws: WebSocket,
        *,
        since: str | None = None,
        last: int | None = None,
        key: str | None = None,
        envelope: bool = False,
    ) -> None:
        """Put ``ws`` in the room: from now on it is sent every message of the room.

        A task in the connection's nursery (``ws.nursery``) forwards them, so the
        membership ends with the connection. Each member has its own bounded buffer; when
        it overflows, ``on_overflow`` either drops its oldest message or closes the
        connection with 1013.

        Args:
            ws: The connection.
            since: In a room that keeps history, the id of the last message the client
                has: it is sent every kept message after that one, then the live ones,
                with none missed and none twice, however many are sent meanwhile.
            last: In a room that keeps history, instead of ``since``: it is sent the
                latest ``last`` kept messages first (a newcomer sees what was said), then
                the live ones, again with none missed and none twice.
            key: In a room with presence, who this connection is. By default ``ws.user``
                (when it is a str), else a key of the connection's own,
                ``"anonymous:<random>"``.
            envelope: In a room that keeps history, send each message as the JSON text
                ``{"id": ..., "message": ...}`` (``"message"`` holds the JSON value, or
                the text as a JSON string; binary messages come as ``{"id": ...,
                "bytes": <base64>}``), so that the client learns the ids.

        Raises:
            HistoryGap: ``since`` is older than what the room keeps, or unknown to it.
                Nothing was sent, and ``ws`` is not a member.
            BroadcastError: The backend cannot be reached to read the history.
            WebSocketStateError: ``ws`` is not inside ``async with`` (or an App view).
            ValueError: ``since``, ``last``, ``envelope`` or ``key`` asked of a room that
                keeps no history or has no presence; both ``since`` and ``last``.
        """
        try:
            nursery = ws.nursery
        except WebSocketStateError:
            raise WebSocketStateError(
                "Room.join() needs the WebSocket inside `async with ws` (or an App view)"
            ) from None
        config = self.config
        if (since is not None or last is not None or envelope) and not config.keeps_history:
            raise ValueError(
                f"room {self.name!r} keeps no history: give it RoomConfig(history_size=...)"
                " for since=, last= or envelope="
            )
        if since is not None:
            parse_id(since)
            if last is not None:
                raise ValueError("join() takes since= or last=, not both")
        if last is not None and (type(last) is not int or last < 1):
            raise ValueError(f"last must be None or an int of at least 1, not {last!r}")
        if key is not None and not config.presence:
            raise ValueError(
                f"room {self.name!r} has no presence: give it RoomConfig(presence=True)"
            )
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        if self.channel in _members_of(ws):
            return  # already a member
        presence_key = None
        if config.presence:
            presence_key = presence.default_key(ws) if key is None else key
        receiver = await self.hub._add((self.channel,), partial(_close_slow_member, ws))
        backlog: list[Message] = []
        try:
            # Subscribed first, read second: a message sent meanwhile is in both, and the
            # forwarder skips its live copy by id; none can be in neither.
            if since is not None:
                backlog = await self.history(since=since)
            elif last is not None:
                backlog = await self.history(limit=last)
        except BaseException:
            self.hub._remove(receiver)
            raise
        receiver.envelope = envelope
        receiver.presence_key = presence_key
        receiver.catches_up = config.keeps_history
        if self.hub._metrics is not None:
            receiver.on_drop = self.hub._metrics.room_drop_counter(self.name)
        _members_of(ws)[self.channel] = receiver
        after = backlog[-1].id if backlog else since
        nursery.start_soon(self._forward, ws, receiver, backlog, after)
        if presence_key is not None:
            self.hub._count_presence(self.name, presence_key, 1)
            await self._announce_presence()

    def leave(self, ws: WebSocket) -> None:
        """Take ``ws`` out of the room (it also leaves when its connection ends)."""
        receiver = _members_of(ws).pop(self.channel, None)
        if receiver is not None:
            receiver.close(WebSocketDisconnect(1000))
            self.hub._remove(receiver)

    async def _forward(
        self,
        ws: WebSocket,
        receiver: _Receiver,
        backlog: list[Message],
        after: str | None,
    ) -> None:
        try:
            for message in backlog:
                await self._send_to(ws, receiver, message)
            last = backlog[-1].id if backlog else after
            # Live messages that the backlog already held come first in the buffer: skip
            # them until the first newer one (after which all are newer).
            skip_through = None if last is None else parse_id(last)
            while True:
                message = await receiver.get()
                if message is _CATCH_UP:
                    if last is not None:
                        missed = await self._missed_since(last)
                        for message in missed:
                            await self._send_to(ws, receiver, message)
                        last = missed[-1].id if missed else last
                        skip_through = parse_id(last)
                    continue
                if skip_through is not None and message.id is not None:
                    if parse_id(message.id) <= skip_through:
                        continue
                    skip_through = None
                # The common case inline: one coroutine less per member and message.
                data = message.data
                if receiver.envelope and message.id is not None:
                    await ws.send_text(envelope(message.id, data, message.is_json))
                elif isinstance(data, str):
                    await ws.send_text(data)
                else:
                    await ws.send_bytes(data)
                last = message.id or last
        except (WebSocketDisconnect, WebSocketStateError, BroadcastOverflow):
            pass  # the connection is gone or closed, or the member left
        finally:
            _members_of(ws).pop(self.channel, None)
            self.hub._remove(receiver)
            if receiver.presence_key is not None:
                self.hub._count_presence(self.name, receiver.presence_key, -1)
                # Also when cancelled (the connection ends): shielded, and bounded.
                with trio.move_on_after(self.hub.config.publish_timeout, shield=True):
                    await self._announce_presence()

    async def _missed_since(self, last: str) -> list[Message]:
        """After the hub lost its backend: the kept messages after ``last``."""
        try:
            return await self.history(since=last)
        except (HistoryGap, BroadcastError) as exc:
            logger.warning("broadcast: a member of %r missed messages (%s)", self.name, exc)
            return []

    @staticmethod
    async def _send_to(ws: WebSocket, receiver: _Receiver, message: Message) -> None:
        data = message.data
        if receiver.envelope and message.id is not None:
            await ws.send_text(envelope(message.id, data, message.is_json))
        elif isinstance(data, str):
            await ws.send_text(data)
        else:
            await ws.send_bytes(data)

    async def _announce_presence(self) -> None:
        try:
            await self.hub._sync_presence(self.name)
        except BroadcastError as exc:
            # The heartbeat tells the backend once it is back.
            logger.warning("broadcast: presence in %r not updated (%s)", self.name, exc)

    # -- Sending ---------------------------------------------------------------------------

    async def _publish(self, data: str | bytes, is_json: bool) -> str | None:
        config = self.config
        if config.keeps_history:
            return await self.hub._backend.publish_kept(self, data, is_json, config)
        await self.hub.publish(self.channel, data)
        return None

    async def send(self, message: Any) -> str | None:
        """Send a text (``str``), binary (``bytes``) or JSON (anything else) message.

        Returns:
            The message's id in a room that keeps history, else ``None`` (the same for
            every ``send*``).

        Raises:
            BroadcastError: The backend cannot be reached; the message is not sent.
        """
        if isinstance(message, (str, bytes)):
            return await self._publish(message, False)
        return await self.send_json(message)

    async def send_text(self, text: str) -> str | None:
        """Send a text message to every member."""
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes a str, not {type(text).__name__}")
        return await self._publish(text, False)

    async def send_bytes(self, data: bytes) -> str | None:
        """Send a binary message to every member."""
        if not isinstance(data, bytes):
            raise TypeError(f"send_bytes() takes bytes, not {type(data).__name__}")
        return await self._publish(data, False)

    async def send_json(self, data: Any) -> str | None:
        """Encode ``data`` as JSON once, and send the text to every member."""
        return await self._publish(_dumps(data), True)

    # -- History and presence --------------------------------------------------------------

    async def history(self, since: str | None = None, limit: int | None = None) -> list[Message]:
        """The kept messages, oldest first, each with its ``id``.

        Args:
            since: Only those after this id (``None``: from the oldest kept).
            limit: At most this many: the first ones after ``since``, or, without
                ``since``, the latest ones.

        Raises:
            HistoryGap: ``since`` is older than what the room keeps, or unknown to it.
            BroadcastError: The backend cannot be reached.
            ValueError: The room keeps no history, or ``limit`` is below 1.
        """
        config = self.config
        if not config.keeps_history:
            raise ValueError(
                f"room {self.name!r} keeps no history: give it RoomConfig(history_size=...)"
            )
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be None or an int of at least 1, not {limit!r}")
        if since is not None:
            parse_id(since)
        oldest, last, entries = await self.hub._backend.read_history(self, since, limit, config)
        if since is not None:
            check_since(since, oldest, last)
        return [Message(self.channel, data, i, is_json) for i, data, is_json in entries]

    async def presence(self) -> dict[str, int]:
        """Who is in the room, over every worker: key -> number of connections.

        Raises:
            BroadcastError: The backend cannot be reached.
            ValueError: The room has no presence.
        """
        self._require_presence()
        return await self.hub._sync_presence(self.name)

    @asynccontextmanager
    async def watch_presence(self) -> AsyncIterator[PresenceWatch]:
        """The room's :class:`PresenceChange` events, for the ``async with`` block.

        Every change of a key's connections over every worker comes, in order, including
        the leaves of a worker that died (within ``presence_ttl``). Watch first, then read
        :meth:`presence`: the changes that follow apply to that snapshot.

        Raises:
            ValueError: The room has no presence.
        """
        self._require_presence()
        self.hub._watched[self.name] += 1
        try:
            async with self.hub.subscribe(self.presence_channel) as subscription:
                yield PresenceWatch(subscription)
        finally:
            self.hub._watched[self.name] -= 1
            if not self.hub._watched[self.name]:
                del self.hub._watched[self.name]

    def _require_presence(self) -> None:
        if not self.config.presence:
            raise ValueError(
                f"room {self.name!r} has no presence: give it RoomConfig(presence=True)"
            )


def _milliseconds(seconds: float | None) -> str:
    return "" if seconds is None else str(max(1, round(seconds * 1000)))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def count_drops(hub: Broadcast, metrics: Metrics) -> None:
    """Count the room messages ``hub`` drops in ``metrics`` (an App with metrics on)."""
    hub._metrics = metrics


def _members_of(ws: WebSocket) -> dict[str, _Receiver]:
    """The rooms a WebSocket is in (created on first use: most connections join none)."""
    lifetime = lifetime_of(ws)
    if lifetime is None:
        return {}  # its block is over: it has left every room
    if lifetime.rooms is None:
        lifetime.rooms = {}
    return lifetime.rooms


def _close_slow_member(ws: WebSocket, receiver: _Receiver) -> None:
    logger.info("broadcast: closing %r, %d room messages behind", ws, receiver.limit)
    lifetime = lifetime_of(ws)
    if lifetime is not None:
        lifetime.cancel_with(1013, "too slow: room messages piled up")
