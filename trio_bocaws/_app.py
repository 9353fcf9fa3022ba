"""The ASGI application: WebSocket routes, views, lifespan and the app-wide nursery."""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, overload

import attrs
import trio

from ._config import WebSocketConfig
from ._errors import WebSocketDisconnect, WebSocketStateError, leaves
from ._routing import ParameterError, Router, View, WebSocketRoute
from ._websocket import Receive, Send, WebSocket

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["App", "AppConfig"]

logger = logging.getLogger("trio_bocaws")

ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]
Callback = Callable[[], Any]
V = TypeVar("V", bound=View)
C = TypeVar("C", bound=Callback)


@attrs.frozen(kw_only=True)
class AppConfig:
    """App-wide settings. Immutable; change with :func:`attrs.evolve`.

    Attributes:
        websocket: Defaults for every route's connections; a route's own keywords
            override them.
    """

    websocket: WebSocketConfig = attrs.field(
        factory=WebSocketConfig, validator=attrs.validators.instance_of(WebSocketConfig)
    )


async def _not_found(scope: Any, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"9"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"Not Found"})


async def _call(callback: Callback) -> None:
    result = callback()
    if inspect.isawaitable(result):
        await result


def _describe(callback: Callback) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


class App:
    """An ASGI 3 application that routes WebSocket connections to views.

    Args:
        http_app: An ASGI app for plain HTTP requests (the page that opens the socket,
            say). Without one, HTTP requests get a 404.
        config: App-wide settings, :class:`AppConfig`.

    ::

        app = App()

        @app.websocket_route("/chat/{room}", value_type="json")
        async def chat(ws, room: str, anonymous: bool = False):
            async for message in ws:
                await ws.send({"room": room, "message": message})

    Serve it with ``python -m trio_bocaws module:app`` or
    ``hypercorn --worker-class trio module:app``.
    """

    def __init__(self, http_app: ASGIApp | None = None, *, config: AppConfig | None = None):
        self._http_app = http_app or _not_found
        self._config = AppConfig() if config is None else config
        self._router = Router()
        self._startup: list[Callback] = []
        self._shutdown: list[Callback] = []
        self._nursery: trio.Nursery | None = None

    @property
    def config(self) -> AppConfig:
        return self._config

    @property
    def routes(self) -> tuple[WebSocketRoute, ...]:
        """The WebSocket routes, in matching order."""
        return self._router.routes

    @property
    def nursery(self) -> trio.Nursery:
        """A nursery that lives from startup to shutdown, for app-wide background tasks.

        Its tasks are cancelled at shutdown, after the shutdown callbacks have run.

        Raises:
            WebSocketStateError: Before startup or after shutdown (the server has not run
                the ASGI lifespan protocol yet, or has finished it).
        """
        if self._nursery is None:
            raise WebSocketStateError(
                "app.nursery exists only between startup and shutdown (while the server runs)"
            )
        return self._nursery

    # -- Registering -----------------------------------------------------------------------

    def add_websocket_route(
        self,
        pattern: str,
        view: View,
        *,
        auto_accept: bool | None = None,
        value_type: str | None = None,
        receive_type: str | None = None,
        send_type: str | None = None,
        caught_close_codes: Any = None,
        config: WebSocketConfig | None = None,
    ) -> WebSocketRoute:
        """Route connections to ``pattern`` to ``view``; the keywords are as for
        :class:`~trio_bocaws.WebSocket` and override the app's defaults (or ``config``).

        Raises:
            TypeError: ``view`` is not an ``async def``, or its parameters do not fit.
            ValueError: ``pattern`` is invalid or already routed, or an option is invalid.
        """
        base = self._config.websocket if config is None else config
        route = WebSocketRoute.create(
            pattern,
            view,
            base.with_options(
                auto_accept=auto_accept,
                value_type=value_type,
                receive_type=receive_type,
                send_type=send_type,
                caught_close_codes=caught_close_codes,
            ),
        )
        self._router.add(route)
        return route

    def websocket_route(
        self,
        pattern: str,
        *,
        auto_accept: bool | None = None,
        value_type: str | None = None,
        receive_type: str | None = None,
        send_type: str | None = None,
        caught_close_codes: Any = None,
        config: WebSocketConfig | None = None,
    ) -> Callable[[V], V]:
        """Decorator form of :meth:`add_websocket_route`; returns the view unchanged."""

        def register(view: V) -> V:
            self.add_websocket_route(
                pattern,
                view,
                auto_accept=auto_accept,
                value_type=value_type,
                receive_type=receive_type,
                send_type=send_type,
                caught_close_codes=caught_close_codes,
                config=config,
            )
            return view

        return register

    def on_startup(self, callback: C) -> C:
        """Run ``callback`` (sync or async, no arguments) at startup, in order. If one
        raises, the server refuses to start."""
        self._startup.append(callback)
        return callback

    def on_shutdown(self, callback: C) -> C:
        """Run ``callback`` (sync or async, no arguments) at shutdown, in order."""
        self._shutdown.append(callback)
        return callback

    @overload
    def on(self, event: str) -> Callable[[C], C]: ...
    @overload
    def on(self, event: str, callback: C) -> C: ...
    def on(self, event: str, callback: Callback | None = None) -> Any:
        """Bocadillo's ``@app.on("startup")`` and ``@app.on("shutdown")``."""
        register = {"startup": self.on_startup, "shutdown": self.on_shutdown}.get(event)
        if register is None:
            raise ValueError(f"unknown event {event!r}: use 'startup' or 'shutdown'")
        return register if callback is None else register(callback)

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http_app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _websocket(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        found = self._router.match(path)
        if found is None:
            ws = WebSocket.from_config(scope, receive, send, self._config.websocket)
            # Bocadillo refused unknown paths with 403; the body says why.
            await self._refuse(ws, 403, f"no WebSocket route for {path}")
            return
        route, raw_params = found
        ws = WebSocket.from_config(scope, receive, send, route.config)
        try:
            arguments = route.arguments(ws, raw_params)
        except ParameterError as exc:
            await self._refuse(ws, 400, str(exc))
            return
        try:
            async with _ViewScope(ws):
                await route.view(ws, **arguments)
        except BaseException as exc:
            self._report(exc, route)

    @staticmethod
    async def _refuse(ws: WebSocket, status: int, body: str) -> None:
        with contextlib.suppress(WebSocketDisconnect):  # the client gave up first
            await ws.reject(status, body=body)

    @staticmethod
    def _report(exc: BaseException, route: WebSocketRoute) -> None:
        """Log what a view raised, once, unwrapped; let cancellations through."""
        if isinstance(exc, trio.Cancelled):
            raise exc
        if isinstance(exc, BaseExceptionGroup):
            cancelled, rest = exc.split(trio.Cancelled)
            errors = leaves(rest) if rest is not None else []
        else:
            cancelled, errors = None, [exc]
        name = getattr(route.view, "__qualname__", route.view)
        for error in errors:
            if isinstance(error, WebSocketDisconnect):
                logger.info(
                    "client of %s left with close code %s (not in caught_close_codes)%s",
                    name,
                    error.code,
                    f": {error.reason}" if error.reason else "",
                )
            elif isinstance(error, Exception):
                logger.error(
                    "WebSocket view %s for %r raised",
                    name,
                    route.pattern,
                    exc_info=(type(error), error, error.__traceback__),
                )
            else:
                raise error  # KeyboardInterrupt, SystemExit: not ours to swallow
        if cancelled is not None:
            raise cancelled

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - server bug
            return
        started = False
        failed: str | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    failed = await self._run_startup()
                    if failed is None:
                        await send({"type": "lifespan.startup.complete"})
                        started = True
                        await receive()  # "lifespan.shutdown", after every connection ended
                        await self._run_shutdown()
                finally:
                    self._nursery = None
                    nursery.cancel_scope.cancel()
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
        if failed is not None:
            await send({"type": "lifespan.startup.failed", "message": failed})
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _run_startup(self) -> str | None:
        for callback in self._startup:
            try:
                await _call(callback)
            except Exception as exc:
                logger.error("startup callback %s failed", _describe(callback), exc_info=exc)
                return f"startup callback {_describe(callback)} failed: {exc!r}"
        return None

    async def _run_shutdown(self) -> None:
        for callback in self._shutdown:
            try:
                await _call(callback)
            except Exception:
                logger.exception("shutdown callback %s failed", _describe(callback))


class _ViewScope:
    """``async with ws`` for a view: the connection's nursery, without accepting first.

    With ``auto_accept`` the handshake is answered on first use, so a view can still
    ``reject()`` before it sends or receives.
    """

    __slots__ = ("_ws",)

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    async def __aenter__(self) -> WebSocket:
        return await self._ws._open(accept=False)

    async def __aexit__(self, *exc_info: Any) -> bool:
        return await self._ws.__aexit__(*exc_info)  # noqa: ASYNC102 (it shields its close)
