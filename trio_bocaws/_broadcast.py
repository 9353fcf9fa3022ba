"""Broadcast: publish to named channels, subscribe to them, and rooms of WebSockets.

One :class:`Broadcast` hub per process. Its backend carries messages between processes:
``memory://`` keeps them in this process (one worker), ``redis://host:port/db`` goes
through Redis pub/sub, so that every worker (and machine) sees every message. Within the
process the hub fans each message out to local subscribers without ever waiting for one
(:mod:`trio_bocaws._pubsub`); a room's members are sent theirs by the hub's relays
(:mod:`trio_bocaws._room_delivery`).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

import trio

from . import _room_presence as presence
from . import _room_redis
from ._errors import WebSocketDisconnect, WebSocketStateError, leaves
from ._pubsub import (
    BroadcastConfig,
    BroadcastError,
    BroadcastOverflow,
    Buffered,
    Message,
    Receiver,
    Subscription,
)
from ._room_delivery import Member, Relays
from ._room_history import (
    HistoryGap,
    MemoryHistory,
    RoomConfig,
    check_since,
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

# Over Redis, a payload is one byte saying what it is, then the message.
_TEXT: Final = b"t"
_BYTES: Final = b"b"
# A message of a room that keeps history: the kind (T text, J JSON text, B bytes), then its
# id, a space, and the message.
_KINDS: Final = {b"T": (True, False), b"J": (True, True), b"B": (False, False)}
_ROOM_PREFIX: Final = "trio_bocaws.room:"


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
        self._receivers: dict[str, set[Buffered]] = {}
        self._relays = Relays()  # send room members their messages
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
        self._relaying: trio.CancelScope | None = None
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
        self._relaying = trio.CancelScope()
        await nursery.start(self._relay, self._relaying)

    async def _relay(self, scope: trio.CancelScope, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await self._relays.run(task_status)

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
        if self._relaying is not None:
            self._relaying.cancel()
            self._relaying = None

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
        receiver = Receiver(channels, self.config)
        await self._add(receiver)
        try:
            yield Subscription(receiver)
        finally:
            self._remove(receiver)

    async def _add(self, receiver: Buffered) -> None:
        for channel in receiver.channels:
            self._receivers.setdefault(channel, set()).add(receiver)
        try:
            for channel in receiver.channels:
                await self._backend.subscribe(channel)
        except BaseException:
            self._remove(receiver)
            raise

    def _remove(self, receiver: Buffered) -> None:
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
        if lifetime_of(ws) is None:
            raise WebSocketStateError(
                "Room.join() needs the WebSocket inside `async with ws` (or an App view)"
            )
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
        known = _members_of(ws).get(self.channel)
        if known is not None and known.closed is None:
            return  # already a member
        presence_key = None
        if config.presence:
            presence_key = presence.default_key(ws) if key is None else key
        relays = self.hub._relays
        if not relays.running:
            raise BroadcastError(
                f"{self.hub!r} is not running: give it to App(broadcast=...), or use"
                " `async with hub:`"
            )
        member = Member(ws, self.channel, self.hub.config, relays, _close_slow_member)
        await self.hub._add(member)
        try:
            # Subscribed first, read second: a message sent meanwhile is in both, and the
            # live copy is skipped by id; none can be in neither.
            if since is not None:
                member.backlog = await self.history(since=since)
            elif last is not None:
                member.backlog = await self.history(limit=last)
        except BaseException:
            self.hub._remove(member)
            raise
        member.envelope = envelope
        member.presence_key = presence_key
        if config.keeps_history:
            member.missed_since = self._missed_since
            member.last = member.backlog[-1].id if member.backlog else since
            if member.last is not None:
                member.skip_through = parse_id(member.last)
        if self.hub._metrics is not None:
            member.on_drop = self.hub._metrics.room_drop_counter(self.name)
        member.on_end = self._ended
        if presence_key is not None:
            member.announce = self._announce_leave
        _members_of(ws)[self.channel] = member
        member.release()
        if presence_key is not None:
            self.hub._count_presence(self.name, presence_key, 1)
            await self._announce_presence()

    def leave(self, ws: WebSocket) -> None:
        """Take ``ws`` out of the room (it also leaves when its connection ends)."""
        member = _members_of(ws).pop(self.channel, None)
        if member is not None:
            member.close(WebSocketDisconnect(1000))
            if member.presence_key is not None:
                ws.nursery.start_soon(self._announce_presence)

    def _ended(self, member: Member) -> None:
        """``member`` left, or its connection ended or failed: no more messages for it."""
        self.hub._remove(member)
        if member.presence_key is not None:
            self.hub._count_presence(self.name, member.presence_key, -1)

    async def _announce_leave(self) -> None:
        # Also when the connection was cancelled: shielded, and bounded.
        with trio.move_on_after(self.hub.config.publish_timeout, shield=True):
            await self._announce_presence()

    async def _missed_since(self, last: str) -> list[Message]:
        """After the hub lost its backend: the kept messages after ``last``."""
        try:
            return await self.history(since=last)
        except (HistoryGap, BroadcastError) as exc:
            logger.warning("broadcast: a member of %r missed messages (%s)", self.name, exc)
            return []

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


def _members_of(ws: WebSocket) -> dict[str, Member]:
    """The rooms a WebSocket is in (created on first use: most connections join none)."""
    lifetime = lifetime_of(ws)
    if lifetime is None:
        return {}  # its block is over: it has left every room
    if lifetime.rooms is None:
        lifetime.rooms = {}
    return cast("dict[str, Member]", lifetime.rooms)  # rooms put only members there


def _close_slow_member(member: Member) -> None:
    logger.info("broadcast: closing %r, %d room messages behind", member.ws, member.limit)
    lifetime = lifetime_of(member.ws)
    if lifetime is not None:
        lifetime.cancel_with(1013, "too slow: room messages piled up")
