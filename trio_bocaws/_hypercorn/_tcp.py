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

__all__ = ["close", "init", "run"]

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
