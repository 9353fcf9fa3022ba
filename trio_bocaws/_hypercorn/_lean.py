"""The lean per-message path: hypercorn's trio connection without the overhead it does
not need, with its semantics kept.

Both replacements take the lean path only on a plain :class:`trio.SocketStream` on a POSIX
system (``os.read``/``os.write`` on a socket's file descriptor); TLS streams, and a
configured ``read_timeout``, keep hypercorn's own code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.events import Closed, RawData
from hypercorn.protocol.events import Data
from hypercorn.protocol.h11 import H11Protocol, H11WSConnection
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import MAX_RECV

__all__ = ["protocol_send", "read_data"]

_POSIX = os.name == "posix"  # os.read/os.write on a socket's descriptor work there

direct_websocket_reads = True
"""Whether the read loop hands an HTTP/1.1 WebSocket's bytes straight to its stream (for
the benchmarks, which measure that part's share; always on otherwise)."""


def _plain_socket(stream: object) -> Any:
    """The trio socket under a plain (not TLS) stream, or ``None``."""
    if _POSIX and type(stream) is trio.SocketStream:
        return stream.socket
    return None


def read_data(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``TCPServer._read_data``: wait for the socket to be readable, then read it.

    hypercorn enters ``trio.fail_after(read_timeout or inf)`` around every read, even
    without a read timeout, and trio's ``receive_some`` first tries a read that fails with
    ``BlockingIOError`` whenever the client is idle (every message of a ping-pong), then
    waits, then checkpoints once more. Here, when no ``read_timeout`` is configured: one
    ``wait_readable``, one ``os.read``. EOF, a reset and a closed stream end the loop as in
    hypercorn, then the protocol is told ``Closed()``. Once an HTTP/1.1 connection is a
    WebSocket, its bytes go straight to the WebSocket stream: the layers in between
    (``ProtocolWrapper``, ``H11Protocol``, ``H11WSConnection``) only pass them through.
    """

    async def _read_data(self: Any) -> None:
        sock = _plain_socket(self.stream)
        if sock is None or self.config.read_timeout is not None:
            await original(self)
            return
        # The loop is here, not in a function of its own: one coroutine frame less for
        # every idle connection.
        protocol = self.protocol
        websocket: Any = None
        while True:
            if sock.fileno() == -1:
                break  # closed by another task (a failed send, the idle timeout)
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                break  # closed while we waited
            # No await between this check and the read: a closed descriptor's number can be
            # given to another connection at once.
            fd = sock.fileno()
            if fd == -1:
                break
            try:
                data = os.read(fd, MAX_RECV)
            except BlockingIOError:
                continue  # readable, then not (another wake-up took it): wait again
            except OSError:
                break  # reset by the peer: as trio's BrokenResourceError in hypercorn's loop
            if websocket is not None and data:
                await websocket.handle(Data(stream_id=1, data=data))
                continue
            await protocol.handle(RawData(data))
            if not data:
                break
            websocket = _websocket_stream(protocol)
        await protocol.handle(Closed())

    # The "a failed connection says so" record wraps this one and checks hypercorn's code
    # through it (inspect.unwrap).
    _read_data.__wrapped__ = original  # type: ignore[attr-defined]
    return _read_data


def _websocket_stream(wrapper: Any) -> Any:
    """The connection's WebSocket stream once its bytes only pass through to it, or ``None``.

    That is an HTTP/1.1 connection upgraded to a WebSocket with nothing buffered: from then
    on hypercorn's ``H11Protocol`` hands every read, whole, to the stream as ``Data``; the
    protocol and the connection object do not change again.
    """
    if not direct_websocket_reads:
        return None
    protocol = getattr(wrapper, "protocol", None)
    if type(protocol) is not H11Protocol:
        return None
    connection = protocol.connection
    stream = protocol.stream
    if type(connection) is H11WSConnection and not connection.buffer and type(stream) is WSStream:
        return stream
    return None


def protocol_send(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``TCPServer.protocol_send``: write at once what the socket takes at once.

    hypercorn writes every chunk with ``send_all`` in a shielded cancel scope, so that a
    cancelled writer cannot leave half a frame on the wire. Most writes fit in the
    socket's buffer: here, under the same lock, a task that is not cancelled writes with
    one non-blocking ``os.write``; what is left (a partial write, a full buffer), and any
    write of a cancelled task, goes through hypercorn's shielded ``send_all`` as before.
    An ``OSError`` tells the protocol the connection is closed, as hypercorn does.
    """

    async def _protocol_send(self: Any, event: Any) -> None:
        if not isinstance(event, RawData):
            await original(self, event)
            return
        sock = _plain_socket(self.stream)
        if sock is None:
            await original(self, event)
            return
        async with self.send_lock:
            data: Any = event.data
            if trio.current_effective_deadline() != -math.inf:
                # No await between the check and the write (a closed descriptor's number
                # can be reused at once).
                fd = sock.fileno()
                if fd != -1 and not sock.did_shutdown_SHUT_WR:
                    try:
                        sent = os.write(fd, data)
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        await self.protocol.handle(Closed())
                        return
                    if sent == len(data):
                        return
                    data = memoryview(data)[sent:]
            try:
                with trio.CancelScope(shield=True):
                    await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())

    return _protocol_send
