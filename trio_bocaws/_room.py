"""A room: WebSockets that receive every message sent to it, in every process.

A room is a channel of its hub (:class:`~trio_bocaws.Broadcast`), whose members are
WebSockets (:class:`~trio_bocaws._room_delivery.Member`); it may keep history and know who
is in it (:class:`~trio_bocaws.RoomConfig`). It reaches its hub only through
:class:`RoomHub`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import attrs
import cattrs
import trio

from . import _room_presence as presence
from ._broadcast_backends import MemoryBackend, RedisBackend
from ._errors import WebSocketDisconnect, WebSocketStateError
from ._pubsub import BroadcastConfig, BroadcastError, Buffered, Message, Subscription, safe_url
from ._room_delivery import Member, Relays
from ._room_history import HistoryGap, RoomConfig, check_since, parse_id
from ._room_presence import PRESENCE_PREFIX, PresenceWatch
from ._typed import message_converter
from ._websocket import lifetime_of

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._websocket import WebSocket

__all__ = ["Room", "RoomHub"]

logger = logging.getLogger("trio_bocaws")

_ROOM_PREFIX: Final = "trio_bocaws.room:"


class RoomHub(Protocol):
    """What a room uses of its hub (:class:`~trio_bocaws.Broadcast`)."""

    url: str
    config: BroadcastConfig
    _backend: MemoryBackend | RedisBackend
    _relays: Relays
    _metrics: Metrics | None
    _watched: Counter[str]
    _converter: cattrs.BaseConverter | None

    @property
    def _cluster(self) -> bool: ...

    def _room_config(self, name: str) -> RoomConfig: ...

    async def _add(self, receiver: Buffered) -> None: ...

    def _remove(self, receiver: Buffered) -> None: ...

    def _count_presence(self, name: str, key: str, delta: int) -> None: ...

    async def _sync_presence(self, name: str) -> dict[str, int]: ...

    async def publish(self, channel: str, data: str | bytes) -> None: ...

    def subscribe(self, *channels: str) -> AbstractAsyncContextManager[Subscription]: ...

    def subscribers(self, channel: str) -> int: ...


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

    def __init__(self, hub: RoomHub, name: str) -> None:
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

        The membership ends with the connection's block (the view, or ``async with ws``),
        or at :meth:`leave`. Joining starts no task: the hub's relays send each member its
        messages, in order. Each member has its own bounded buffer; when it overflows,
        ``on_overflow`` either drops its oldest message or closes the connection with 1013.

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

        An instance of an attrs class (a typed message) goes as JSON, unstructured by the
        App's converter (``App(converter=...)``, else :func:`~trio_bocaws.message_converter`'s),
        as a typed route would send it.

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
        """Encode ``data`` as JSON once, and send the text to every member.

        Raises:
            TypeError: ``data`` is not JSON serializable (nothing is sent).
            ValueError: ``data`` holds NaN or an infinity (nothing is sent).
        """
        converter = self.hub._converter
        return await self._publish(_dumps(data, converter or _default_converter()), True)

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


def _dumps(data: Any, converter: cattrs.BaseConverter) -> str:
    def unstructured(value: Any) -> Any:
        if attrs.has(type(value)):
            return converter.unstructure(value)
        raise TypeError(
            f"a room sends JSON, and {type(value).__name__} is not JSON serializable"
            " (give it as JSON values, or as an attrs class: a typed message)"
        )

    return json.dumps(
        data, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=unstructured
    )


@functools.cache
def _default_converter() -> cattrs.Converter:
    return message_converter()


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
