"""What an App runs between the server's startup and its shutdown.

The ASGI lifespan protocol, for :class:`~trio_bocaws.App`: the wrapped HTTP app's own
lifespan first (:mod:`._http_lifespan`), then the broadcast hub and the startup callbacks;
the app-wide nursery for the whole run; at shutdown (which the server announces only after
every connection has ended) the shutdown callbacks, the wrapped app's shutdown, the hub
closed and the nursery cancelled. A failure at startup refuses the server's start with a
message that says which part failed.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from ._broadcast import Broadcast, BroadcastError
from ._errors import leaves
from ._hints import running_under_trio, wrong_server_message
from ._http_lifespan import WrappedLifespan
from ._pubsub import safe_url

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["AppLifespan", "Callback", "describe"]

logger = logging.getLogger("trio_bocaws")

Callback = Callable[[], Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


async def _call(callback: Callback) -> None:
    result = callback()
    if inspect.isawaitable(result):
        await result


def describe(callback: Callable[..., Any]) -> str:
    """A callback's name, for log lines and startup failures."""
    return getattr(callback, "__qualname__", None) or repr(callback)


class AppLifespan:
    """An App's startup and shutdown callbacks, its app-wide nursery (``nursery``, set while
    the server runs), its broadcast hub's life, and the wrapped HTTP app's lifespan."""

    def __init__(self, broadcast: Broadcast | None, wrapped: Any) -> None:
        self.startup: list[Callback] = []
        self.shutdown: list[Callback] = []
        self.nursery: trio.Nursery | None = None
        self._broadcast = broadcast
        self._wrapped = wrapped  # the App's http_app, whose lifespan runs inside ours

    async def run(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        """Answer the server's ASGI lifespan protocol for the app."""
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - server bug
            return
        if not running_under_trio():
            # Before anything of Trio's runs: under asyncio it fails in its own words.
            # The server reports the message (so it is not logged here as well).
            await send({"type": "lifespan.startup.failed", "message": wrong_server_message()})
            return
        started = False
        failed: str | None = None
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                try:
                    wrapped = None
                    if self._wrapped is not None:
                        wrapped = WrappedLifespan(self._wrapped, scope)
                        failed = await wrapped.startup(nursery)
                        if failed is not None:
                            logger.error("%s", failed)
                    if failed is None:
                        failed = await self._start_broadcast(nursery)
                    if failed is None:
                        failed = await self._run_startup()
                    if failed is None:
                        await send({"type": "lifespan.startup.complete"})
                        started = True
                        await receive()  # "lifespan.shutdown", after every connection ended
                        await self._run_shutdown()
                        if wrapped is not None:
                            # Last: our shutdown callbacks may still use what it set up.
                            await wrapped.shutdown()
                finally:
                    self.nursery = None
                    nursery.cancel_scope.cancel()
                    if self._broadcast is not None:
                        self._broadcast.close()
        except Exception as exc:
            # An app-wide task failed, and its siblings were cancelled.
            for error in leaves(exc):
                logger.error(
                    "app-wide background task failed; the other app-wide tasks were cancelled",
                    exc_info=(type(error), error, error.__traceback__),
                )
            if not started:
                failed = f"an app-wide task failed during startup: {exc!r}"
            else:
                # Connections are still served; answer the shutdown when it comes.
                await receive()
                await self._run_shutdown()
        except BaseExceptionGroup as group:
            cancelled = leaves(group)
            if all(isinstance(error, trio.Cancelled) for error in cancelled):
                # Cancelled from outside (the server gave up: it could not bind, say). Our
                # nursery wrapped the cancellation in a group, which hypercorn 0.17 logs as
                # a lifespan error with its traceback; any other app would have let a
                # plain cancellation through.
                raise cancelled[0] from None
            raise
        if failed is not None:
            await send({"type": "lifespan.startup.failed", "message": failed})
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _start_broadcast(self, nursery: trio.Nursery) -> str | None:
        if self._broadcast is None:
            return None
        try:
            await self._broadcast.start(nursery)
        except BroadcastError as exc:
            logger.error("broadcast backend failed to start: %s", exc)
            # No password in the message: the server prints it.
            return f"broadcast backend {safe_url(self._broadcast.url)}: {exc}"
        return None

    async def _run_startup(self) -> str | None:
        for callback in self.startup:
            try:
                await _call(callback)
            except Exception as exc:
                logger.error("startup callback %s failed", describe(callback), exc_info=exc)
                return f"startup callback {describe(callback)} failed: {exc!r}"
        return None

    async def _run_shutdown(self) -> None:
        for callback in self.shutdown:
            try:
                await _call(callback)
            except Exception:
                logger.exception("shutdown callback %s failed", describe(callback))
