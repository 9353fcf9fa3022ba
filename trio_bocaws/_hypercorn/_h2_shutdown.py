"""The end of an HTTP/2 connection at a server shutdown: its clients answer, then GOAWAY.

At a shutdown every WebSocket gets its 1001 close frame, and hypercorn shuts an HTTP/2
connection (GOAWAY, then the TCP close) as soon as the applications of all its streams have
returned. The clients' answers to the 1001s (their own close frames, ending their half of
each stream) are then still on the way, and reach a connection that h2 counts as closed:
h2's state machine moves to ``CLOSED`` on sending GOAWAY and takes every frame after that
but another GOAWAY as a protocol error (python-hyper/h2#1181, open), which it answers with
a second GOAWAY, ``PROTOCOL_ERROR`` (seen in 7 of 12 shutdowns with three WebSockets on one
connection). RFC 9113, section 6.8, lets streams at or below the GOAWAY's last stream id
complete; h2 does not.

So the GOAWAY waits here for the clients: :func:`close_stream` holds the connection open
while any of its streams may still carry a frame from the client (its half is not ended),
and the connection sends GOAWAY (NO_ERROR) once the last of them has ended (close frame with
END_STREAM, RST_STREAM, or a close frame that the server answers with a reset), then closes.
The wait is bounded by the server's ``graceful_timeout``: at that deadline hypercorn cancels
every connection. What the client still sends after our GOAWAY (a WINDOW_UPDATE, a PING
crossing it) is dropped, not answered with ``PROTOCOL_ERROR``: the TCP close follows at once.

The shutdown counts from trio_bocaws's announcement (which sends the 1001s), a few scheduler
rounds before hypercorn marks it (``context.terminated``): a connection whose last stream
ends in between would otherwise get no GOAWAY at all, and its TCP close at that mark, with
the clients' answers still on the way.

Nothing here runs before a shutdown has begun: the check is in ``_close_stream`` (once per
stream), and the connection's reads go through :func:`_handle_events_while_closing` only
while it waits.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from h2.connection import ConnectionState
from h2.stream import StreamState

from .._shutdown import current_server_shutdown

__all__ = ["close_stream"]

# Stream 0 is the connection itself in HTTP/2: never the id of a request, so the stand-in
# below cannot collide with a stream of hypercorn's.
_CONNECTION: Final = 0

# The states of an h2 stream whose client has not ended its half: it may still send on it.
_CLIENT_SENDING: Final = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL})


class _AwaitingClients:
    """Stands in ``H2Protocol.streams`` while the connection waits for its clients' last
    frames: a stream that is not idle, so that hypercorn sends no GOAWAY meanwhile."""

    __slots__ = ()

    idle = False

    async def handle(self, event: Any) -> None:
        """The connection closed while waiting (``StreamClosed``, from hypercorn's
        ``handle(Closed())``): nothing is left to do."""
        await trio.lowlevel.checkpoint()


def close_stream(original: Callable[[Any, int], Awaitable[None]]) -> Callable[..., Any]:
    """Wraps ``H2Protocol._close_stream`` (once per stream, when it ends), after the record
    "a WebSocket's HTTP/2 stream ended on both sides".

    During a shutdown, when the stream that ends leaves only idle ones (hypercorn's GOAWAY
    would follow at once) while the client may still send on some of its streams, the
    connection waits for those first. See the module's docstring.
    """

    async def _close_stream(self: Any, stream_id: int) -> None:
        await original(self, stream_id)
        # Decided without an await before hypercorn's stream_send, which called this, looks
        # at the streams and the shutdown again (synchronously) to send its GOAWAY or not.
        if (
            not self.closed
            and _CONNECTION not in self.streams
            and _shutting_down(self)
            and all(stream.idle for stream in self.streams.values())
        ):
            _before_goaway(self)

    _close_stream.__wrapped__ = original  # type: ignore[attr-defined]
    return _close_stream


def _shutting_down(protocol: Any) -> bool:
    """Whether the server is stopping: trio_bocaws announces it (and the views close with
    1001) a few scheduler rounds before hypercorn marks it."""
    if protocol.context.terminated.is_set():
        return True
    shutdown = current_server_shutdown()
    return shutdown is not None and shutdown.started


def _before_goaway(protocol: Any) -> None:
    """The last stream of a connection has ended in a shutdown: its GOAWAY is near."""
    # From the GOAWAY on, what the client still sends is dropped.
    protocol.handle = functools.partial(_handle_after_goaway, protocol)
    if _clients_sending(protocol):
        # Not idle for hypercorn (no GOAWAY, its idle timer stopped) until they have ended.
        protocol.streams[_CONNECTION] = _AwaitingClients()
        protocol._handle_events = functools.partial(_handle_events_while_closing, protocol)
    elif not protocol.context.terminated.is_set():
        # hypercorn sends its GOAWAY only once it marks the shutdown, and would then close
        # this idle connection without one: send it now (queued here, written by a task of
        # its own, so that nothing awaits before hypercorn's check).
        protocol.connection.close_connection()
        protocol.task_group.spawn(protocol._flush)


def _clients_sending(protocol: Any) -> bool:
    """Whether the client may still send on any stream of the connection."""
    return any(
        stream.state_machine.state in _CLIENT_SENDING
        for stream in protocol.connection.streams.values()
    )


async def _handle_events_while_closing(protocol: Any, events: list[Any]) -> None:
    """``H2Protocol._handle_events`` of a connection waiting for its clients: as ever, then,
    once no client can send on any stream, GOAWAY (NO_ERROR) and the close."""
    from hypercorn.events import Updated

    await type(protocol)._handle_events(protocol, events)
    if protocol.closed or _clients_sending(protocol):
        return
    del protocol._handle_events  # back to the class's
    if isinstance(protocol.streams.get(_CONNECTION), _AwaitingClients):
        del protocol.streams[_CONNECTION]
    idle = all(stream.idle for stream in protocol.streams.values())
    if idle:
        protocol.connection.close_connection()
        await protocol._flush()
    # As hypercorn's stream_send after the last stream: an idle connection that is shutting
    # down is closed by its idle task at once.
    await protocol.send(Updated(idle=idle))


async def _handle_after_goaway(protocol: Any, event: Any) -> None:
    """``H2Protocol.handle`` once the shutdown's GOAWAY is near: after it has gone out, the
    client's bytes are dropped (h2 would answer each frame with a GOAWAY, PROTOCOL_ERROR);
    anything else, and everything before, as ever."""
    from hypercorn.events import RawData

    if (
        type(event) is RawData
        and protocol.connection.state_machine.state is ConnectionState.CLOSED
    ):
        await trio.lowlevel.checkpoint()
        return
    await type(protocol).handle(protocol, event)
