"""Reading for a handler that only sends, on a server that does not report closes.

With trio_bocaws's hypercorn adapter the server tells a WebSocket when its client has gone
(:mod:`trio_bocaws._stream_status`) and refuses sends on a closed stream, so a handler
that only sends learns of the disconnect at its next send. A plain ASGI server does
neither: it drops such sends, and the ``websocket.disconnect`` event waits in the receive
queue for a ``receive()`` that never comes.

On such a server, inside ``async with ws``, the WebSocket starts a :class:`Reader` when a
send finds the handler in a run of sends (the second send since the last message
received) and no task receiving: the rule counts calls, it reads no clock. The reader
holds the server's receive, keeps what arrives in order (at most
``max_buffered_messages``; beyond that it stops reading, so the server stops reading the
socket and nothing is lost), and records the disconnect for the next send to raise. When
a task calls ``receive()``, it takes the buffered messages first, then waits for the
reader's next event; the reader hands that over and ends, and ``receive()`` reads from
the server itself again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["Reader"]

Event = dict[str, Any]


class Reader:
    """One background read loop over a server's ``receive``; see the module docstring."""

    __slots__ = (
        "_arrived",
        "_buffer",
        "_limit",
        "_on_disconnect",
        "_receive",
        "_room",
        "_wanted",
        "error",
        "running",
    )

    def __init__(
        self,
        receive: Callable[[], Awaitable[Any]],
        limit: int,
        on_disconnect: Callable[[Event], object],
    ) -> None:
        self._receive = receive
        self._on_disconnect = on_disconnect
        self._limit = limit
        self._buffer: deque[Event] = deque()
        self._arrived = trio.lowlevel.ParkingLot()  # where a receive() waits for an event
        self._room = trio.lowlevel.ParkingLot()  # where the reader waits for buffer space
        self._wanted = False  # a receive() waits: hand over the next event and end
        self.running = False
        self.error: Exception | None = None
        """What the server's receive raised in the reader, for the next receive() to raise."""

    @property
    def holds_events(self) -> bool:
        """Whether ``receive()`` must go through :meth:`get` (not the server's receive)."""
        return self.running or bool(self._buffer) or self.error is not None

    def start(self, nursery: trio.Nursery) -> None:
        if not self.running and self.error is None:
            self.running = True
            self._wanted = False
            nursery.start_soon(self._run)

    async def _run(self) -> None:
        try:
            while not self._wanted:
                if len(self._buffer) >= self._limit:
                    await self._room.park()
                    continue
                event = await self._receive()
                self._buffer.append(event)
                self._arrived.unpark_all()
                if event.get("type") != "websocket.receive":
                    # The client has gone: say so now (the next send raises), and leave the
                    # event for receive() to raise after the messages before it.
                    self._on_disconnect(event)
                    return
        except Exception as exc:
            # Kept for the next receive() to raise: an exception escaping this task would
            # arrive wrapped in a group, far from the code that can act on it.
            self.error = exc
        finally:
            self.running = False
            self._arrived.unpark_all()

    async def get(self) -> Event:
        """The next event, in order: buffered, then from the reader (which then ends),
        then from the server directly."""
        while True:
            if self._buffer:
                event = self._buffer.popleft()
                self._room.unpark()
                await trio.lowlevel.checkpoint()
                return event
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            if not self.running:
                direct: Event = await self._receive()
                return direct
            self._wanted = True
            await self._arrived.park()
