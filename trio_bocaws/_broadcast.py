"""Broadcast: publish to named channels, subscribe to them, and rooms of WebSockets.

One :class:`Broadcast` hub per process. Its backend carries messages between processes:
``memory://`` keeps them in this process (one worker), ``redis://host:port/db`` goes
through Redis pub/sub, so that every worker (and machine) sees every message. Within the
process the hub fans each message out to local subscribers without ever waiting for one
(:mod:`trio_bocaws._pubsub`); a room's members are sent theirs by the hub's relays
(:mod:`trio_bocaws._room_delivery`).
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import cattrs
import trio

from ._broadcast_backends import MemoryBackend, RedisBackend
from ._errors import leaves
from ._pubsub import (
    BroadcastConfig,
    BroadcastError,
    BroadcastOverflow,
    Buffered,
    Message,
    Receiver,
    Subscription,
    safe_url,
)
from ._room import Room
from ._room_delivery import Relays
from ._room_history import (
    RoomConfig,
)

if TYPE_CHECKING:
    from ._metrics import Metrics

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
        self._converter: cattrs.BaseConverter | None = None  # an App's, for typed messages
        self._backend: MemoryBackend | RedisBackend
        if scheme == "memory":
            self._backend = MemoryBackend(self)
        elif scheme in ("redis", "rediss"):
            self._backend = RedisBackend(self, url)
        elif scheme in ("redis+cluster", "rediss+cluster"):
            self._backend = RedisBackend(self, url, cluster=True)
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
        return isinstance(self._backend, RedisBackend) and self._backend.cluster

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


def use_app_settings(
    hub: Broadcast, metrics: Metrics | None, converter: cattrs.BaseConverter | None
) -> None:
    """An App's hub counts its rooms' drops in ``metrics`` (with metrics on), and encodes
    typed messages sent to rooms with the App's ``converter``."""
    hub._metrics = metrics
    hub._converter = converter
