"""The ASGI lifespan protocol for :class:`~trio_bocaws.testing.TestClient`, run in its own
task as a server runs it, with the server-shutdown notice open WebSockets listen to."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from ._errors import leaves
from ._shutdown import STATE_KEY, ServerShutdown

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

ASGIApp = Callable[..., Awaitable[None]]


class Lifespan:
    """The ASGI lifespan protocol, run in its own task, as a server runs it."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], timeout: float) -> None:
        self._app = app
        self._state = state
        self._timeout = timeout
        self._shutdown = ServerShutdown()
        state[STATE_KEY] = self._shutdown
        self._to_app, self._inbox = trio.open_memory_channel[dict[str, Any]](2)
        self._started = trio.Event()
        self._stopped = trio.Event()
        self._failed: str | None = None
        self._supported = True
        self._nursery_manager: Any = None
        self._nursery: trio.Nursery | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}
        try:
            await self._app(scope, self._inbox.receive, self._send)
        except Exception:
            # As hypercorn: an app that does not do lifespan raises; go on without it.
            self._supported = False
        finally:
            self._started.set()
            self._stopped.set()

    async def _send(self, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failed = message.get("message", "")
            self._started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._stopped.set()

    async def start(self) -> None:
        # A nursery that outlives this call: entered here, exited in stop().
        self._nursery_manager = trio.open_nursery()
        self._nursery = nursery = await self._nursery_manager.__aenter__()
        nursery.start_soon(self._run)
        self._to_app.send_nowait({"type": "lifespan.startup"})
        try:
            with trio.fail_after(self._timeout):
                await self._started.wait()
            if self._failed is not None:
                raise RuntimeError(f"the app failed to start: {self._failed}")
        except BaseException:
            nursery.cancel_scope.cancel()
            await self._close()  # noqa: ASYNC102 (closes the nursery it just cancelled)
            raise

    def begin_shutdown(self) -> None:
        self._shutdown.begin()

    async def stop(self) -> None:
        self._shutdown.begin()
        with trio.move_on_after(self._timeout, shield=True):
            if self._supported and not self._stopped.is_set():
                await self._to_app.send({"type": "lifespan.shutdown"})
                await self._stopped.wait()
        # Outside the scope above: a nursery must close in the scope it opened in.
        await self._close()  # noqa: ASYNC102 (it only cancels and collects the task)

    async def _close(self) -> None:
        manager, nursery = self._nursery_manager, self._nursery
        self._nursery_manager = self._nursery = None
        if manager is None or nursery is None:
            return
        nursery.cancel_scope.cancel()
        try:
            await manager.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            errors = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
            if errors:
                raise
