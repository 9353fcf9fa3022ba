"""The ASGI application: WebSocket routes, views, lifespan and the app-wide nursery."""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

import attrs
import cattrs
import trio

from . import _metrics
from ._app_lifespan import AppLifespan, Callback, describe
from ._asyncapi import AsyncAPIConfig, asyncapi_document, serve_document
from ._broadcast import Broadcast, use_app_settings
from ._codecs import ClientJSONError
from ._config import WebSocketConfig
from ._connection_log import ConnectionRecord, log_refusal
from ._connection_log import wanted as connections_logged
from ._endpoint import WebSocketEndpoint, view_of
from ._errors import (
    MessageValidationError,
    RejectConnection,
    UnexpectedMessageType,
    WebSocketDisconnect,
    WebSocketStateError,
    leaves,
)
from ._hints import asyncio_hint, running_under_trio, wrong_server_message
from ._origins import OriginPattern, origin_allowed, parse_origins
from ._refusal import Refusal, send_refusal
from ._routing import APP_DEFAULT, Authenticate, ParameterError, Router, View, WebSocketRoute
from ._websocket import Receive, Send, WebSocket, enter_block

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["App", "AppConfig"]

logger = logging.getLogger("trio_bocaws")

ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]
V = TypeVar("V", bound=View)
C = TypeVar("C", bound=Callback)


def _optional_cap(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{attribute.name} must be None or an int of at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class AppConfig:
    """App-wide settings. Immutable; change with :func:`attrs.evolve`.

    Attributes:
        websocket: Defaults for every route's connections; a route's own keywords
            override them.
        allowed_origins: Web pages, besides the server's own, whose scripts may connect:
            exact origins (``"https://app.example.com"``), subdomain patterns
            (``"*.example.com"``, ``"https://*.example.com:8443"``), or ``"*"`` for any
            page (which turns the check off). A handshake whose ``Origin`` is neither the
            host the client connected to nor listed is refused with HTTP 403, before any
            view runs: the defence against cross-site WebSocket hijacking.
        allow_missing_origin: Accept handshakes without an ``Origin`` header. Browsers
            always send one; other clients (scripts, servers) usually do not.
        max_connections: Open WebSockets this app serves at once, in this process;
            further handshakes are refused with HTTP 503 (existing connections go on).
            ``None`` for no cap. The default, 10,000, holds about 250 MB of connection
            state on hypercorn; raise the file-descriptor limit to match.
    """

    websocket: WebSocketConfig = attrs.field(
        factory=WebSocketConfig, validator=attrs.validators.instance_of(WebSocketConfig)
    )
    allowed_origins: tuple[OriginPattern, ...] = attrs.field(default=(), converter=parse_origins)
    allow_missing_origin: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )
    max_connections: int | None = attrs.field(default=10_000, validator=_optional_cap)


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


class App:
    """An ASGI 3 application that routes WebSocket connections to views.

    ::

        app = App()

        @app.websocket_route("/chat/{room}", value_type="json")
        async def chat(ws, room: str, anonymous: bool = False):
            async for message in ws:
                await ws.send({"room": room, "message": message})

    Serve it with ``python -m trio_bocaws module:app`` or
    ``hypercorn --worker-class trio module:app``.

    Args:
        http_app: An ASGI app for plain HTTP requests (the page that opens the socket,
            say). Without one, HTTP requests get a 404; a plain HTTP request to a
            WebSocket route's path gets 426 Upgrade Required where this app answers 404.
            Its lifespan runs inside the App's: its startup first (if it fails, the
            server refuses to start), its shutdown last, after the WebSockets closed
            and the App's shutdown callbacks ran. An app that does not do lifespan
            (it raises on the scope, or returns) goes without.
        config: App-wide settings, :class:`AppConfig`.
        authenticate: A hook run before every view (routes may replace it): called with
            the :class:`~trio_bocaws.WebSocket` before the handshake is answered, sync or
            async. What it returns is attached as ``ws.user``; raising
            :class:`~trio_bocaws.RejectConnection` refuses the handshake with its status
            and body (401, 403...).
        broadcast: A :class:`~trio_bocaws.Broadcast` hub: connected at startup (if it
            cannot connect, the server refuses to start), its reader running in the app's
            nursery, closed at shutdown.
        converter: The cattrs converter for every route's typed messages (the default is
            :func:`~trio_bocaws.message_converter`'s).
        asyncapi: Serve the app's AsyncAPI document over HTTP, as
            :class:`~trio_bocaws.AsyncAPIConfig` says.
        metrics: Record OpenTelemetry metrics (the ``metrics`` extra): ``True`` for the
            global meter provider, or a ``MeterProvider`` to use. Off by default, and
            then OpenTelemetry is not even imported. See :doc:`/deployment`.

    Raises:
        ImportError: ``metrics`` is on and ``opentelemetry-api`` is not installed.
        TypeError: ``metrics`` is neither a bool nor a meter provider.
    """

    def __init__(
        self,
        http_app: ASGIApp | None = None,
        *,
        config: AppConfig | None = None,
        authenticate: Authenticate | None = None,
        broadcast: Broadcast | None = None,
        converter: cattrs.BaseConverter | None = None,
        asyncapi: AsyncAPIConfig | None = None,
        metrics: Any = False,
    ):
        self._http_app = http_app or _not_found
        self._config = AppConfig() if config is None else config
        if converter is not None:
            # Every route's typed messages use it, unless a route's config names another.
            websocket = attrs.evolve(self._config.websocket, converter=converter)
            self._config = attrs.evolve(self._config, websocket=websocket)
        if asyncapi is not None:
            self._http_app = serve_document(
                lambda: self.asyncapi(
                    title=asyncapi.title,
                    version=asyncapi.version,
                    description=asyncapi.description,
                ),
                asyncapi.path,
                self._http_app,
            )
        self._authenticate = _check_hook(authenticate)
        self._broadcast = broadcast
        self._metrics = _metrics.metrics_from(metrics)
        if broadcast is not None:
            use_app_settings(broadcast, self._metrics, self._config.websocket.converter)
        self._router = Router()
        # Startup and shutdown callbacks, the app-wide nursery, the hub's start and close,
        # and the wrapped HTTP app's own lifespan, run inside ours.
        self._lifespan = AppLifespan(broadcast, http_app)
        self._connections = 0

    @property
    def broadcast(self) -> Broadcast:
        """The :class:`~trio_bocaws.Broadcast` hub given to the app.

        Raises:
            WebSocketStateError: The app was made without one.
        """
        if self._broadcast is None:
            raise WebSocketStateError(
                "this App has no broadcast hub: App(broadcast=Broadcast(...))"
            )
        return self._broadcast

    @property
    def connections(self) -> int:
        """WebSocket connections open right now (counted against ``max_connections``)."""
        return self._connections

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
        nursery = self._lifespan.nursery
        if nursery is None:
            raise WebSocketStateError(
                "app.nursery exists only between startup and shutdown (while the server "
                "runs; in tests, `async with TestClient(app)` runs the startup)"
            )
        return nursery

    if not TYPE_CHECKING:  # for mypy, App has the attributes it declares and no others

        def __getattr__(self, name: str) -> Any:
            # Only reached for attributes App lacks: a Starlette or Flask habit, say.
            if name in _HTTP_ROUTING:
                raise AttributeError(
                    f"'App' object has no attribute {name!r}: an App routes WebSockets only "
                    "(@app.websocket_route); serve HTTP with another ASGI app (Starlette, "
                    "Quart-trio, HTMLPage...) given as App(http_app)"
                )
            raise AttributeError(f"'App' object has no attribute {name!r}")

    # -- Registering -----------------------------------------------------------------------

    def add_websocket_route(
        self,
        pattern: str,
        view: View | type[WebSocketEndpoint],
        *,
        auto_accept: bool | None = None,
        value_type: Any = None,
        receive_type: Any = None,
        send_type: Any = None,
        caught_close_codes: Any = None,
        idle_timeout: float | None = None,
        authenticate: Any = APP_DEFAULT,
        config: WebSocketConfig | None = None,
    ) -> WebSocketRoute:
        """Route connections to ``pattern`` to ``view`` (an ``async def``, or a
        :class:`~trio_bocaws.WebSocketEndpoint` class).

        ``auto_accept``, ``value_type``, ``receive_type``, ``send_type``,
        ``caught_close_codes`` and ``idle_timeout`` are as for
        :class:`~trio_bocaws.WebSocketConfig`, and override the app's defaults (or
        ``config``). ``authenticate`` replaces the app's hook for this route; ``None``
        means no authentication here.

        Raises:
            TypeError: ``view`` is not an ``async def``, or its parameters do not fit.
            ValueError: ``pattern`` is invalid or already routed, or an option is invalid.
        """
        base = self._config.websocket if config is None else config
        route = WebSocketRoute.create(
            pattern,
            view_of(view),
            base.with_options(
                auto_accept=auto_accept,
                value_type=value_type,
                receive_type=receive_type,
                send_type=send_type,
                caught_close_codes=caught_close_codes,
                idle_timeout=idle_timeout,
            ),
            authenticate=_check_hook(authenticate),
        )
        self._router.add(route)
        return route

    def websocket_route(
        self,
        pattern: str,
        *,
        auto_accept: bool | None = None,
        value_type: Any = None,
        receive_type: Any = None,
        send_type: Any = None,
        caught_close_codes: Any = None,
        idle_timeout: float | None = None,
        authenticate: Any = APP_DEFAULT,
        config: WebSocketConfig | None = None,
    ) -> Callable[[V], V]:
        """Decorator form of :meth:`add_websocket_route`; returns the view unchanged.

        Raises:
            TypeError: Used without parentheses and a pattern (``@app.websocket_route``).
        """
        given: object = pattern  # typed str; the mistake passes the view
        if not isinstance(given, str) and callable(given):
            # `@app.websocket_route` alone would register nothing and hide the view.
            name = getattr(given, "__name__", "view")
            raise TypeError(
                f"@app.websocket_route needs the route's path: write "
                f'@app.websocket_route("/{name}") above `async def {name}`, with parentheses'
            )

        def register(view: V) -> V:
            self.add_websocket_route(
                pattern,
                view,
                auto_accept=auto_accept,
                value_type=value_type,
                receive_type=receive_type,
                send_type=send_type,
                caught_close_codes=caught_close_codes,
                idle_timeout=idle_timeout,
                authenticate=authenticate,
                config=config,
            )
            return view

        return register

    def asyncapi(
        self, *, title: str, version: str, description: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """An AsyncAPI 3.0 document describing every WebSocket route, as a dict.

        Each route is a channel: its address with path parameters, its query parameters
        (in the WebSockets binding), the messages it receives and sends (JSON Schemas of
        typed messages), and the close codes it documents (``x-close-codes``). ``extra``
        may give ``servers``. ``python -m trio_bocaws asyncapi module:app`` prints it.
        """
        return asyncapi_document(
            self.routes, title=title, version=version, description=description, **extra
        )

    def on_startup(self, callback: C) -> C:
        """Run ``callback`` (sync or async, no arguments) at startup, in order. If one
        raises, the server refuses to start."""
        self._lifespan.startup.append(callback)
        return callback

    def on_shutdown(self, callback: C) -> C:
        """Run ``callback`` (sync or async, no arguments) at shutdown, in order."""
        self._lifespan.shutdown.append(callback)
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
        # Few locals here: this frame lives as long as the connection.
        if scope["type"] == "websocket":
            # The connection is served in this frame rather than in helper coroutines:
            # every frame on the stack while a view waits stays allocated for the
            # connection's life, and idle connections are what a server holds most of.
            if self._lifespan.nursery is None and not running_under_trio():
                # No lifespan ran (uvicorn --lifespan off, say), so nothing said it yet.
                await _refuse_wrong_server(scope, send)
                return
            route, arguments = self._admit(scope)
            if route is None:
                if self._metrics is not None:
                    self._metrics.refused_handshake(arguments.cause)
                log_refusal(scope, arguments.status, arguments.cause)
                await send_refusal(scope, receive, send, arguments)
                return
            ws = WebSocket.from_config(scope, receive, send, route.config)
            self._connections += 1
            # What the metrics and the debug line per connection learn of it; without
            # either, nothing (one question to the logger, no clock, nothing per message).
            record: ConnectionRecord | None = None
            if self._metrics is not None:
                record = self._metrics.connection_opened(route.pattern)
            elif connections_logged():
                record = ConnectionRecord()
            try:
                if not await self._authenticated(ws, route, record):
                    return
                try:
                    # `async with ws`, spelled out, without the accept on entry: with
                    # auto_accept the handshake is answered on first use, so the view can
                    # still reject() before it sends or receives.
                    await enter_block(ws)
                    if record is not None:
                        record.attach(ws)
                    try:
                        await route.view(ws, **arguments)
                    except BaseException as exc:
                        if not await ws.__aexit__(type(exc), exc, exc.__traceback__):  # noqa: ASYNC102
                            raise
                    else:
                        await ws.__aexit__(None, None, None)
                except BaseException as exc:
                    self._report(exc, route)
            finally:
                self._connections -= 1
                if record is not None:
                    record.ended(ws)
        elif scope["type"] == "http":
            if self._router.match(_route_path(scope)) is None:
                await self._http_app(scope, receive, send)
            else:
                await self._http_to_websocket_route(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan.run(scope, receive, send)

    def _admit(self, scope: Mapping[str, Any]) -> tuple[WebSocketRoute | None, Any]:
        """Decide, from the scope alone, whether a handshake may reach a view: its route
        and the view's arguments, or ``None`` and the :class:`Refusal` to send."""
        config = self._config
        cap = config.max_connections
        if cap is not None and self._connections >= cap:
            logger.warning("refused a WebSocket handshake: max_connections=%d are open", cap)
            return None, Refusal(
                503, "the server is at capacity; try again later", _RETRY, cause=_metrics.CAP
            )
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        origin = _origin_of(scope)
        if not origin_allowed(origin, scope, config.allowed_origins, config.allow_missing_origin):
            if origin is None:
                logger.warning(
                    "refused a WebSocket handshake to %s without an Origin header "
                    "(allow_missing_origin=False)",
                    path,
                )
                return None, Refusal(
                    403,
                    "a handshake without an Origin header may not open this WebSocket",
                    cause=_metrics.ORIGIN,
                )
            logger.warning(
                "refused a WebSocket handshake to %s from origin %r: not the server's "
                "own, nor in allowed_origins",
                path,
                origin,
            )
            return None, Refusal(
                403, f"origin {origin!r} may not open this WebSocket", cause=_metrics.ORIGIN
            )
        found = self._router.match(path)
        if found is None:
            # Bocadillo refused unknown paths with 403; the body says why.
            return None, Refusal(403, f"no WebSocket route for {path}", cause=_metrics.NO_ROUTE)
        route, raw_params = found
        try:
            return route, route.arguments(scope, raw_params)
        except ParameterError as exc:
            return None, Refusal(400, str(exc), cause=_metrics.BAD_PARAMETERS)

    async def _http_to_websocket_route(
        self, scope: Mapping[str, Any], receive: Receive, send: Send
    ) -> None:
        """A plain HTTP request to a WebSocket route's path: the wrapped HTTP app keeps
        the path if it serves it; where it answers 404, the client gets 426 Upgrade
        Required, which says what the path is for."""
        upgrade = False

        async def send_or_upgrade(message: Mapping[str, Any]) -> None:
            nonlocal upgrade
            if message["type"] == "http.response.start" and message["status"] == 404:
                upgrade = True
                await _upgrade_required(scope, send)
            elif not upgrade:  # the 404's body is dropped: the 426 has its own
                await send(message)

        await self._http_app(scope, receive, send_or_upgrade)

    async def _authenticated(
        self, ws: WebSocket, route: WebSocketRoute, record: ConnectionRecord | None
    ) -> bool:
        """Run the route's hook (or the app's); attach what it returns to ``ws``, or refuse
        the handshake (and note it in ``record``). True when the view may run."""
        hook: Authenticate | None = (
            self._authenticate if route.authenticate is APP_DEFAULT else route.authenticate
        )
        if hook is None:
            return True
        try:
            result = hook(ws)
            if inspect.isawaitable(result):
                result = await result
        except RejectConnection as refusal:
            if record is not None:
                record.refused(refusal.status, _metrics.AUTH)
            await _refuse(ws, refusal.status, refusal.body, refusal.headers)
            return False
        except Exception:
            logger.exception("authenticate hook %s failed for %r", describe(hook), route.pattern)
            if record is not None:
                record.refused(500, _metrics.AUTH)
            await _refuse(ws, 500, "")
            return False
        ws.user = result
        return True

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
            if (
                isinstance(error, (UnexpectedMessageType, ClientJSONError, MessageValidationError))
                and len(errors) == 1
            ):
                # The client's fault (closed 1003/1007): one line, no traceback, so that a
                # client cannot fill the log with them.
                logger.warning(
                    "WebSocket view %s for %r: client sent %s", name, route.pattern, error
                )
            elif isinstance(error, WebSocketDisconnect):
                logger.info(
                    "client of %s left with close code %s (not in caught_close_codes)%s",
                    name,
                    error.code,
                    f": {error.reason}" if error.reason else "",
                )
            elif isinstance(error, Exception):
                hint = asyncio_hint(error)
                logger.error(
                    "WebSocket view %s for %r raised%s",
                    name,
                    route.pattern,
                    f"; {hint}" if hint else "",
                    exc_info=(type(error), error, error.__traceback__),
                )
            else:
                raise error  # KeyboardInterrupt, SystemExit: not ours to swallow
        if cancelled is not None:
            raise cancelled


async def _refuse(ws: WebSocket, status: int, body: str | bytes, headers: Any = None) -> None:
    with contextlib.suppress(WebSocketDisconnect):  # the client gave up first
        await ws.reject(status, body=body, headers=headers)


_RETRY: Final = (("retry-after", "5"),)

# What HTTP frameworks call their routing methods.
_HTTP_ROUTING: Final = frozenset(
    {"route", "get", "post", "put", "patch", "delete", "add_route", "api_route", "mount"}
)


def _route_path(scope: Mapping[str, Any]) -> str:
    """The path the routes see: the scope's, without the root path a proxy adds."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


async def _upgrade_required(scope: Mapping[str, Any], send: Send) -> None:
    body = (
        f"{_route_path(scope)} is a WebSocket route: connect to it with a WebSocket client "
        "(ws:// or wss://), not a plain HTTP request\n"
    ).encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if scope.get("http_version") in ("1.0", "1.1"):
        # Connection-specific headers, which HTTP/2 forbids (its WebSockets are streams).
        headers += [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]
    await send({"type": "http.response.start", "status": 426, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse_wrong_server(scope: Mapping[str, Any], send: Send) -> None:
    """Refuse a handshake on a server that is not Trio's, with the message that says
    which command to run instead (no Trio call: none works here)."""
    wrong = wrong_server_message()
    logger.error("%s", wrong)
    if "websocket.http.response" in scope.get("extensions", {}):
        body = wrong.encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1011})


def _origin_of(scope: Mapping[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin: str = value.decode("latin-1")
            return origin
    return None


def _check_hook(hook: Any) -> Any:
    if hook is not None and hook is not APP_DEFAULT and not callable(hook):
        raise TypeError(f"authenticate must be a callable taking the WebSocket, not {hook!r}")
    return hook
