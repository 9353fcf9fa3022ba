"""How a hub's messages travel between processes: the memory and Redis backends.

``memory://`` keeps them in this process; ``redis://`` (and ``redis+cluster://``) carries
them through Redis pub/sub (sharded pub/sub on a cluster), keeps room histories in Redis
Streams and presence in hashes that expire with their worker. A backend calls back into
its hub only through :class:`Hub`, and knows a room only by its names (:class:`RoomKeys`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import trio

from . import _room_presence as presence
from . import _room_redis
from ._errors import leaves
from ._pubsub import BroadcastConfig, BroadcastError, safe_url
from ._room_history import MemoryHistory, RoomConfig, parse_id

logger = logging.getLogger("trio_bocaws")

# Over Redis, a payload is one byte saying what it is, then the message.
_TEXT: Final = b"t"
_BYTES: Final = b"b"
# A message of a room that keeps history: the kind (T text, J JSON text, B bytes), then its
# id, a space, and the message.
_KINDS: Final = {b"T": (True, False), b"J": (True, True), b"B": (False, False)}


class Hub(Protocol):
    """What a backend needs of its hub (:class:`~trio_bocaws.Broadcast`)."""

    config: BroadcastConfig
    worker: str

    def _deliver(
        self, channel: str, data: str | bytes, message_id: str | None = None, is_json: bool = False
    ) -> None: ...

    def _set_connected(self, connected: bool) -> None: ...

    def _wanted_channels(self) -> list[str]: ...

    def _presence_rooms(self) -> list[str]: ...

    async def _sync_presence(self, name: str) -> dict[str, int]: ...


class RoomKeys(Protocol):
    """A room as its backend knows it (:class:`~trio_bocaws.Room`)."""

    @property
    def name(self) -> str: ...

    @property
    def channel(self) -> str: ...

    @property
    def presence_channel(self) -> str: ...


class MemoryBackend:
    """Messages stay in this process."""

    def __init__(self, hub: Hub) -> None:
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
        self, room: RoomKeys, data: str | bytes, is_json: bool, config: RoomConfig
    ) -> str:
        await trio.lowlevel.checkpoint()
        history = self._histories.get(room.name)
        if history is None:
            history = self._histories[room.name] = MemoryHistory()
        message_id = history.add(data, is_json, config)
        self._hub._deliver(room.channel, data, message_id, is_json)
        return message_id

    async def read_history(
        self, room: RoomKeys, since: str | None, limit: int | None, config: RoomConfig
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

    async def sync_presence(self, room: RoomKeys, counts: Counter[str]) -> dict[str, int]:
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


class RedisBackend:
    """Redis pub/sub through coredis: every process subscribed to a channel gets it.

    No wait for Redis is open-ended, so that a Redis that stops answering (a hung host, a
    network partition) is an error, not a hang. coredis bounds each of its own waits (an
    answer: ``stream_timeout``; a TCP connection; a subscription's confirmation; the
    keepalive), and ends them cleanly, which a cancellation from outside does not always
    do. The hub bounds each whole operation: a publish, a (re)connection.
    """

    def __init__(self, hub: Hub, url: str, cluster: bool = False) -> None:
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
            self._client = cluster_client(url, config)
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
        self, room: RoomKeys, data: str | bytes, is_json: bool, config: RoomConfig
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
        self, room: RoomKeys, since: str | None, limit: int | None, config: RoomConfig
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

    async def sync_presence(self, room: RoomKeys, counts: Counter[str]) -> dict[str, int]:
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


def cluster_client(url: str, config: BroadcastConfig) -> Any:
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


def _milliseconds(seconds: float | None) -> str:
    return "" if seconds is None else str(max(1, round(seconds * 1000)))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
