"""Room presence: who is in a room, with how many connections, and the changes as they
happen.

Each hub counts its own members per key, and tells the backend its whole count for a room
whenever it changes (and, through Redis, at each heartbeat). The backend keeps the sum over
every hub and announces each change of a key's total on the room's presence channel, as a
JSON text that :class:`PresenceWatch` decodes.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from ._websocket import WebSocket

__all__ = ["PresenceChange", "PresenceWatch"]

PRESENCE_PREFIX = "trio_bocaws.presence:"


@attrs.frozen
class PresenceChange:
    """A key's connections in a room changed (in any worker).

    Attributes:
        key: Who (see :meth:`Room.join`).
        connections: How many connections the key has in the room now, over every worker;
            ``0`` means it left.
        joined: Whether the count went up (a connection joined) or down (one or more left,
            or a worker that held them stopped answering).
    """

    key: str
    connections: int
    joined: bool


class _Messages(Protocol):
    """What a watch reads from: a room's subscription (``_broadcast.Subscription``), named
    by what it does so that this module does not import the hub that imports it."""

    async def receive(self) -> Any: ...


class PresenceWatch:
    """The presence changes of one room, in order; ``async for`` them."""

    def __init__(self, subscription: _Messages) -> None:
        self._subscription = subscription

    async def receive(self) -> PresenceChange:
        """The next change."""
        message = await self._subscription.receive()
        event = json.loads(message.data)
        return PresenceChange(event["key"], event["connections"], event["joined"])

    def __aiter__(self) -> PresenceWatch:
        return self

    async def __anext__(self) -> PresenceChange:
        return await self.receive()


def default_key(ws: WebSocket) -> str:
    """``ws.user`` when it is a str; a key of its own for a connection with no user."""
    user: Any = ws.user
    if user is None:
        return f"anonymous:{secrets.token_hex(6)}"
    if not isinstance(user, str):
        raise TypeError(
            f"ws.user is a {type(user).__name__}, not a str: "
            "pass the presence key, as room.join(ws, key=...)"
        )
    return user


def event(key: str, connections: int, joined: bool) -> str:
    return json.dumps({"key": key, "connections": connections, "joined": joined})


def changes(before: Counter[str], after: Counter[str]) -> list[str]:
    """The events that take the totals ``before`` to ``after``."""
    events = []
    for key in before.keys() | after.keys():
        old, new = before.get(key, 0), after.get(key, 0)
        if old != new:
            events.append(event(key, new, new > old))
    return events
