"""Replacements for hypercorn's trio connection (``hypercorn.trio.tcp_server.TCPServer``)."""

from __future__ import annotations

import contextlib
import logging
import socket as socket_module
import sys
from collections.abc import Awaitable, Callable
from socket import SHUT_WR
from typing import Any

import trio

from ._worker import current_options

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["close", "init", "read_data", "run"]

logger = logging.getLogger("trio_bocaws")


def close(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``TCPServer._close``: shut the socket down for writing without a checkpoint."""

    async def _close(self: Any) -> None:
        # As hypercorn's own, minus the checkpoint that trio's send_eof takes while it
        # holds the stream, during which a racing send fails with BusyResourceError (SSL
        # streams have no half-close; they only close).
        socket = getattr(self.stream, "socket", None)
        if socket is not None and not socket.did_shutdown_SHUT_WR:
            with contextlib.suppress(OSError):
                socket.shutdown(SHUT_WR)
        await self.stream.aclose()

    return _close


def init(original: Callable[..., None]) -> Callable[..., None]:
    """``TCPServer.__init__``: set the worker's write timeout on the new connection."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _limit_unacknowledged_writes(self.stream, current_options().write_timeout)

    return __init__


def _limit_unacknowledged_writes(stream: Any, timeout: float | None) -> None:
    """Set TCP_USER_TIMEOUT on the connection's socket (plain or under TLS), if possible."""
    option = getattr(socket_module, "TCP_USER_TIMEOUT", None)  # Linux only
    if timeout is None or option is None:
        return
    plain = getattr(stream, "transport_stream", stream)
    sock = getattr(plain, "socket", None)
    if sock is None:  # pragma: no cover - a Unix socket or an unusual stream
        return
    with contextlib.suppress(OSError):  # not TCP (a Unix socket): nothing to limit
        sock.setsockopt(socket_module.IPPROTO_TCP, option, int(timeout * 1000))


def run(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``TCPServer.run``: an error while serving one connection ends that connection only.

    hypercorn catches only ``OSError`` there; anything else (a bug of h11, h2, wsproto,
    hypercorn or ours, set off by what one client sent) escapes into the server's nursery,
    which cancels every connection and stops the worker. Here it is logged once, with the
    peer's address, and the connection is closed (hypercorn's own ``finally`` has shut it
    down by then; closing again makes sure). Cancellation and ``KeyboardInterrupt`` pass.
    Nothing of this runs per message: it wraps the connection's whole life.
    """

    async def run(self: Any) -> None:
        try:
            await original(self)
        except Exception as error:
            await _contain(self, error, None)
        except BaseExceptionGroup as group:
            errors, rest = group.split(Exception)
            if errors is None:
                raise
            await _contain(self, errors, rest)

    return run


def read_data(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``TCPServer._read_data``: before an error in the read loop ends the connection, tell
    the client, where its protocol has a way to say it: GOAWAY (INTERNAL_ERROR) on HTTP/2,
    a close frame (1011) on a WebSocket over HTTP/1.1.

    Most errors a client can set off are raised here, while its bytes are handled. Once
    per connection: nothing of this runs per message.
    """

    async def _read_data(self: Any) -> None:
        try:
            await original(self)
        except Exception:
            await _last_words(self)  # noqa: ASYNC120 (shielded and bounded inside)
            raise

    return _read_data


async def _last_words(server: Any) -> None:
    try:
        data = _farewell(getattr(server, "protocol", None))
        if data:
            # Bounded: a client that does not read gets no farewell.
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                async with server.send_lock:
                    await server.stream.send_all(data)
    except Exception:  # the state that failed may fail again: close anyway
        logger.debug("no farewell for a failed connection", exc_info=True)


def _farewell(wrapper: Any) -> bytes:
    """What the connection's protocol sends when the server fails it (or nothing)."""
    import h2.connection
    import h2.errors
    from wsproto.connection import Connection, ConnectionState
    from wsproto.events import CloseConnection

    protocol = getattr(wrapper, "protocol", None)
    connection = getattr(protocol, "connection", None)
    if isinstance(connection, h2.connection.H2Connection):
        connection.close_connection(error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
        return connection.data_to_send()
    websocket = getattr(getattr(protocol, "stream", None), "connection", None)
    if isinstance(websocket, Connection) and websocket.state is ConnectionState.OPEN:
        return websocket.send(CloseConnection(code=1011))
    return b""


async def _contain(self: Any, error: BaseException, rest: BaseException | None) -> None:
    logger.error(
        "error while serving the connection from %s; closed it, the server goes on",
        _peer(self),
        exc_info=error,
    )
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(self.stream)
    if rest is not None:
        # A cancellation of the worker (or a KeyboardInterrupt) that came with the error.
        raise rest


def _peer(server: Any) -> str:
    """``HOST:PORT`` of the client, as far as it is known (no request data)."""
    client = getattr(getattr(server, "protocol", None), "client", None)
    if client is None:
        stream = getattr(server.stream, "transport_stream", server.stream)
        with contextlib.suppress(OSError, AttributeError):
            client = stream.socket.getpeername()
    if isinstance(client, tuple) and len(client) >= 2:
        host, port = client[0], client[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "an unknown peer" if client is None else str(client)
