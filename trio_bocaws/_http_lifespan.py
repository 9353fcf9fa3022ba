"""The lifespan of the HTTP app an :class:`~trio_bocaws.App` wraps (``App(http_app)``).

The server speaks the lifespan protocol to the App alone; the App speaks it, in turn, to
the app it wraps, as a server would: a startup that completes or fails, a shutdown at the
end. An app that does not do lifespan (it raises on the scope, or returns without
answering) is left without, as the ASGI specification asks of servers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

__all__ = ["WrappedLifespan"]

logger = logging.getLogger("trio_bocaws")

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _describe(app: Any) -> str:
    return getattr(app, "__qualname__", None) or type(app).__qualname__


class WrappedLifespan:
    """One run of a wrapped app's lifespan: :meth:`startup`, then :meth:`shutdown`."""

    def __init__(self, app: ASGIApp, scope: Mapping[str, Any]) -> None:
        self._app = app
        # The same state dict as ours: what the wrapped app keeps there (Starlette's
        # lifespan state) reaches every request's scope, as the server copies it.
        self._scope = dict(scope)
        self._to_app, self._inbox = trio.open_memory_channel[dict[str, Any]](1)
        self._started = trio.Event()
        self._stopped = trio.Event()
        self._answered = False
        self._failure: str | None = None

    async def startup(self, nursery: trio.Nursery) -> str | None:
        """Run the wrapped app's startup in ``nursery``; the failure message if it failed."""
        nursery.start_soon(self._run)
        await self._to_app.send({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            return f"the HTTP app {_describe(self._app)} failed to start: {self._failure}"
        return None

    async def shutdown(self) -> None:
        """Run the wrapped app's shutdown, if its startup completed; log a failure."""
        if not self._answered or self._stopped.is_set():
            return
        await self._to_app.send({"type": "lifespan.shutdown"})
        await self._stopped.wait()
        if self._failure is not None:
            logger.error(
                "the HTTP app %s failed to shut down: %s", _describe(self._app), self._failure
            )

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._inbox.receive, self._send)
        except Exception as exc:
            if self._answered and not self._stopped.is_set():
                self._failure = self._failure or f"its lifespan raised {exc!r}"
                logger.error(
                    "the HTTP app %s's lifespan raised",
                    _describe(self._app),
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
            elif not self._answered:
                # As servers do: an app that raises on the lifespan scope does without.
                logger.debug("the HTTP app %s does not do lifespan: %r", self._app, exc)
        finally:
            self._started.set()
            self._stopped.set()

    async def _send(self, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._answered = True
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._answered = True
            self._failure = message.get("message") or "no message"
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self._failure = message.get("message") or "no message"
            self._stopped.set()
