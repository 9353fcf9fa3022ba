"""How a room's messages reach its members: a member's buffer, and the relays.

A room of 10,000 members must not cost 10,000 task switches per message, nor let one member
that stopped reading hold up the others. So members have no task of their own. Each has a
bounded buffer (:class:`Member`), filled by the hub without waiting; a member with something
to send waits in one queue, and a few relay tasks (:data:`RELAYS`, per hub) take members from
it in turn and send them what they hold, one member at a time, its messages in order.

A send to a client that reads completes within a few scheduler rounds. One that does not (a
client that stopped reading, so that the server waits for its socket) must not take a relay
from the others: a watcher task counts the rounds in which a busy relay completed no send,
and after :data:`STALL_ROUNDS` of them lets the relay go with its member (it finishes that
member and ends) and starts a new one in its place. Rounds, not seconds: nothing here reads
the clock. A slow member thus costs a task only while it is slow, and only once, however
many messages wait for it (its buffer bounds them).

A membership ends with its connection: the connection's block calls :meth:`Member.connection_ended`
(through the ``rooms`` its :class:`~trio_bocaws._lifetime.Lifetime` keeps), or the view
calls ``room.leave(ws)``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

import trio

from ._errors import WebSocketDisconnect, WebSocketStateError
from ._pubsub import CATCH_UP, BroadcastConfig, Buffered, Message
from ._room_history import envelope, parse_id

if TYPE_CHECKING:
    from ._websocket import WebSocket

logger = logging.getLogger("trio_bocaws")

RELAYS: Final = 16
"""Relay tasks per hub. One message to 10,000 members (``benchmarks/broadcast.py
--relays``), as a share of a plain send loop's time: 1 relay 1.14, 4 0.72, 8 0.66, 16 to
64 between 0.53 and 0.63 from run to run. More only add tasks that wait."""

STALL_ROUNDS: Final = 4
"""Rounds a busy relay may go without completing a send before it is let go. Over hypercorn,
with clients that read, no relay was let go (``benchmarks/broadcast_server.py``: 300
members x 50 messages, 1,000 x 20)."""


class Member(Buffered):
    """One WebSocket in one room: its buffer and where it stands.

    ``queued`` is true while the member waits in the relays' queue or a relay is sending to
    it: only one relay at a time, so its messages go out in order. While ``held`` (its
    history is being read at join), messages are kept but not sent.
    """

    __slots__ = (
        "_relays",
        "announce",
        "backlog",
        "envelope",
        "held",
        "last",
        "missed_since",
        "on_end",
        "presence_key",
        "queued",
        "relay",
        "skip_through",
        "when_overflowing",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        channel: str,
        config: BroadcastConfig,
        relays: Relays,
        when_overflowing: Callable[[Member], None],
    ) -> None:
        super().__init__((channel,), config)
        self.ws = ws
        self.when_overflowing = when_overflowing
        self._relays = relays
        self.backlog: list[Message] = []  # history sent first (not bounded by ``limit``)
        self.queued = False
        self.held = True  # until join has read the history
        self.relay: Relay | None = None
        self.envelope = False
        self.presence_key: str | None = None
        # The last id sent, and the live copies of history messages to skip (ids up to it).
        self.last: str | None = None
        self.skip_through: tuple[int, int] | None = None
        # Set by the room: the kept messages after an id (to catch up after a lost backend),
        # what to do when the membership ends.
        self.missed_since: Callable[[str], Awaitable[list[Message]]] | None = None
        self.on_end: Callable[[Member], None] | None = None
        self.announce: Callable[[], Awaitable[None]] | None = None  # in a room with presence

    # -- Filled by the hub, never waiting ----------------------------------------------------

    def arrived(self) -> None:
        # _schedule() without its check for something to send: once per member and
        # message, and the buffer has just been given one.
        if not self.queued and not self.held:
            self.queued = True
            self._relays.submit(self)

    def catch_up(self) -> None:
        """Fetch what the hub missed while its backend was away (once, whatever it was)."""
        if self.closed is None and self.missed_since is not None:
            self.buffer.append(CATCH_UP)
            self._schedule()

    def release(self) -> None:
        """Start sending: join has read the history."""
        self.held = False
        self._schedule()

    def _schedule(self) -> None:
        if not self.queued and not self.held and (self.buffer or self.backlog):
            self.queued = True
            self._relays.submit(self)

    def overflowed(self) -> None:
        self.when_overflowing(self)

    def close(self, reason: BaseException) -> None:
        """Send nothing more; end the membership (once)."""
        if self.closed is not None:
            return
        self.closed = reason
        self.buffer.clear()
        self.backlog.clear()
        relay = self.relay
        if relay is not None and relay.stalled:
            relay.scope.cancel()  # it may wait on this connection for good
        if self.on_end is not None:
            self.on_end(self)

    async def connection_ended(self) -> None:
        """The connection's block is over (called by its Lifetime); a presence leave is
        announced shielded and bounded (the room's ``announce``)."""
        self.close(WebSocketDisconnect(1000))
        if self.announce is not None:
            await self.announce()

    # -- Sent by a relay -----------------------------------------------------------------------

    async def drain(self, relay: Relay) -> None:
        """Send what the member holds, in order, until it holds nothing."""
        try:
            backlog = self.backlog
            while backlog and self.closed is None:
                message = backlog.pop(0)
                await self._sending(message)
                relay.sent += 1
                self.last = message.id
            buffer = self.buffer
            while buffer and self.closed is None:
                message = buffer.pop(0)
                if message is CATCH_UP:
                    await self._catch_up()
                    continue
                if self.skip_through is not None and message.id is not None:
                    if parse_id(message.id) <= self.skip_through:
                        continue  # a live copy of a message the backlog held
                    self.skip_through = None
                await self._sending(message)
                relay.sent += 1
                if message.id is not None:
                    self.last = message.id
        except (WebSocketDisconnect, WebSocketStateError) as exc:
            self.close(exc)  # the connection is gone or closed
        except Exception as exc:
            # Whatever it was, it is this member's, not the room's nor the hub's.
            logger.warning("broadcast: a room member %r left: %r", self.ws, exc)
            self.close(exc)
        finally:
            self.queued = False

    def _sending(self, message: Message) -> Coroutine[Any, Any, None]:
        """The send of ``message``: the WebSocket's own coroutine, so that awaiting it
        adds no frame of ours per member and message."""
        data = message.data
        if self.envelope and message.id is not None:
            return self.ws.send_text(envelope(message.id, data, message.is_json))
        if isinstance(data, str):
            return self.ws.send_text(data)
        return self.ws.send_bytes(data)

    async def _catch_up(self) -> None:
        last = self.last
        if last is None or self.missed_since is None:
            return
        missed = await self.missed_since(last)
        for message in missed:
            if self.closed is not None:
                return
            await self._sending(message)
            self.last = message.id
        # Live messages already in the buffer that the history held are skipped.
        self.skip_through = parse_id(self.last) if self.last is not None else None


class Relay:
    """One relay task's state, read by the watcher."""

    __slots__ = ("member", "quiet", "scope", "seen", "sent", "stalled")

    def __init__(self) -> None:
        self.member: Member | None = None
        self.sent = 0  # sends completed
        self.seen = 0  # ``sent`` at the watcher's last round
        self.quiet = 0  # rounds busy without a completed send
        self.stalled = False  # let go: it ends after its member
        self.scope = trio.CancelScope()


class Relays:
    """A hub's relay tasks, their queue of members, and the watcher."""

    def __init__(self, size: int = RELAYS) -> None:
        self.size = size
        self.ready: deque[Member] = deque()
        self.active: list[Relay] = []
        self.let_go = 0  # relays let go with a slow member (for benchmarks and tests)
        self._parked: list[trio.lowlevel.Task] = []
        self._watcher: trio.lowlevel.Task | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the relays and the watcher until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for _ in range(self.size):
                    self._start_relay()
                nursery.start_soon(self._watch)
                task_status.started()
        finally:
            self._nursery = None
            self.active.clear()
            self._parked.clear()
            self._watcher = None

    def submit(self, member: Member) -> None:
        self.ready.append(member)
        if self._parked:
            # One relay per member queued: a message to a room of three wakes three relays,
            # one to a room of thousands wakes every relay, once.
            trio.lowlevel.reschedule(self._parked.pop())
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            trio.lowlevel.reschedule(watcher)

    def _start_relay(self) -> None:
        assert self._nursery is not None
        relay = Relay()
        self.active.append(relay)
        self._nursery.start_soon(self._relay, relay)

    async def _relay(self, relay: Relay) -> None:
        ready = self.ready
        with relay.scope:
            while True:  # a relay is let go only while it sends (and then ends below)
                while ready:
                    member = ready.popleft()
                    relay.member, member.relay = member, relay
                    await member.drain(relay)
                    relay.member, member.relay = None, None
                    if relay.stalled:
                        return
                task = trio.lowlevel.current_task()
                self._parked.append(task)

                def unpark(_: Any, task: trio.lowlevel.Task = task) -> trio.lowlevel.Abort:
                    self._parked.remove(task)
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(unpark)

    def _busy(self) -> bool:
        return bool(self.ready) or any(relay.member is not None for relay in self.active)

    async def _watch(self) -> None:
        while True:
            if not self._busy():
                self._watcher = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._unwatch)
            await trio.lowlevel.checkpoint()  # one round
            stalled = []
            for relay in self.active:
                if relay.member is None or relay.sent != relay.seen:
                    relay.seen, relay.quiet = relay.sent, 0
                    continue
                relay.quiet += 1
                if relay.quiet >= STALL_ROUNDS:
                    stalled.append(relay)
            for relay in stalled:  # not while iterating: letting go changes self.active
                self._let_go(relay)

    def _unwatch(self, _: Any) -> trio.lowlevel.Abort:
        self._watcher = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _let_go(self, relay: Relay) -> None:
        relay.stalled = True
        self.active.remove(relay)
        self.let_go += 1
        self._start_relay()
        member = relay.member
        if member is not None and member.closed is not None:
            relay.scope.cancel()
