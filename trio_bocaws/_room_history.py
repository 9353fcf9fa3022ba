"""Room history: message ids, the in-memory buffer, the gap rule and the id envelope.

An id is Redis' stream id format, ``"<milliseconds>-<sequence>"``, on both backends: the
memory backend makes its own the way Redis does, so ids stay increasing across a restart
of the process (as long as the wall clock does not go back) and the same client code
resumes on either backend. Ids are compared as pairs of numbers, never as strings.
"""

from __future__ import annotations

import base64
import json
import time
from collections import deque
from typing import Any

import attrs
import trio

from ._errors import TrioBocawsError

__all__ = ["HistoryGap", "RoomConfig"]

MessageId = tuple[int, int]


class HistoryGap(TrioBocawsError):
    """``Room.join(ws, since=...)`` cannot resume from ``since``: the messages after it are
    no longer all kept (it is older than the oldest kept message), or ``since`` is not an
    id of this room's history (from before a restart that lost it, or never issued).

    Nothing was delivered and the connection is not a member: send the client a full
    state, then join again (without ``since``, or from an id of :meth:`Room.history`).

    Attributes:
        since: The id asked for.
        oldest: The oldest id still kept, or ``None`` if the room keeps nothing now.
    """

    def __init__(self, since: str, oldest: str | None) -> None:
        super().__init__(since, oldest)
        self.since = since
        self.oldest = oldest

    def __str__(self) -> str:
        kept = f"the oldest kept is {self.oldest}" if self.oldest else "none is kept"
        return f"cannot resume after {self.since}: {kept}"


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be None or a number above 0, not {value!r}")


def _count_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{attribute.name} must be None or an int of at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class RoomConfig:
    """What a room keeps and tracks. The hub's default is ``BroadcastConfig.rooms``; one
    room gets its own with ``hub.room(name, config=RoomConfig(...))``.

    Every worker must give a room the same config (configure rooms in code that every
    worker runs): the bounds are applied by whoever sends.

    Attributes:
        history_size: Keep at most this many of the room's latest messages (``None``: no
            bound in count).
        history_age: Keep messages for at most this many seconds (``None``: no bound in
            age). With neither bound (the default) the room keeps nothing, its messages
            have no ids, and it costs what a room without history costs.
        presence: Record who is in the room (:meth:`Room.presence`,
            :meth:`Room.watch_presence`). Off by default: through Redis it costs a round
            trip at each join and leave, and a heartbeat.
    """

    history_size: int | None = attrs.field(default=None, validator=_count_or_none)
    history_age: float | None = attrs.field(default=None, validator=_positive_or_none)
    presence: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @property
    def keeps_history(self) -> bool:
        """Whether the room keeps messages (and gives them ids)."""
        return self.history_size is not None or self.history_age is not None


def parse_id(value: object) -> MessageId:
    """``"<ms>-<seq>"`` as a pair of ints.

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: It is not a message id.
    """
    if not isinstance(value, str):
        raise TypeError(f"a message id is a str such as '1-0', not {type(value).__name__}")
    ms, dash, seq = value.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit() and ms.isascii() and seq.isascii()):
        raise ValueError(f"{value!r} is not a message id (ids look like '1732950000000-0')")
    return int(ms), int(seq)


def format_id(message_id: MessageId) -> str:
    return f"{message_id[0]}-{message_id[1]}"


def check_since(since: str, oldest: str | None, last: str | None) -> MessageId:
    """The position to resume after, or :exc:`HistoryGap`.

    ``since`` is resumable when every message after it is still kept: it is the last id
    the room issued (even if that message has been trimmed since: nothing came after it),
    or it lies between the oldest kept id and the last one.
    """
    position = parse_id(since)
    if last is not None:
        newest = parse_id(last)
        if position == newest:
            return position
        if oldest is not None and parse_id(oldest) <= position < newest:
            return position
    raise HistoryGap(since, oldest)


def envelope(message_id: str, data: str | bytes, is_json: bool) -> str:
    """The JSON text a member that asked for envelopes receives."""
    if isinstance(data, bytes):
        return f'{{"id":"{message_id}","bytes":"{base64.b64encode(data).decode("ascii")}"}}'
    body = data if is_json else json.dumps(data, ensure_ascii=False)
    return f'{{"id":"{message_id}","message":{body}}}'


class IdClock:
    """Issues increasing ids as Redis does: the wall clock's milliseconds, then a counter
    for ids within the same millisecond (or while the clock stands behind the last id)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: MessageId = (0, 0)

    def next(self) -> MessageId:
        now = time.time_ns() // 1_000_000
        ms, seq = self.last
        self.last = (now, 0) if now > ms else (ms, seq + 1)
        return self.last


class MemoryHistory:
    """One room's kept messages on the memory backend: ``(id, data, is_json, time)``."""

    def __init__(self) -> None:
        self.entries: deque[tuple[MessageId, str | bytes, bool, float]] = deque()
        self.clock = IdClock()
        self.issued = False

    def add(self, data: str | bytes, is_json: bool, config: RoomConfig) -> str:
        message_id = self.clock.next()
        self.issued = True
        self.entries.append((message_id, data, is_json, trio.current_time()))
        self.trim(config)
        return format_id(message_id)

    def trim(self, config: RoomConfig) -> None:
        entries = self.entries
        if config.history_size is not None:
            while len(entries) > config.history_size:
                entries.popleft()
        if config.history_age is not None:
            # The Trio clock, not the wall clock: tests drive ages with MockClock.
            horizon = trio.current_time() - config.history_age
            while entries and entries[0][3] < horizon:
                entries.popleft()

    def bounds(self) -> tuple[str | None, str | None]:
        """The oldest kept id and the last issued one."""
        oldest = format_id(self.entries[0][0]) if self.entries else None
        return oldest, format_id(self.clock.last) if self.issued else None

    def read(
        self, after: MessageId | None, limit: int | None
    ) -> list[tuple[str, str | bytes, bool]]:
        if after is None:
            chosen = list(self.entries)
            if limit is not None:
                chosen = chosen[-limit:] if limit else []
        else:
            chosen = [entry for entry in self.entries if entry[0] > after]
            if limit is not None:
                chosen = chosen[:limit]
        return [(format_id(entry[0]), entry[1], entry[2]) for entry in chosen]
