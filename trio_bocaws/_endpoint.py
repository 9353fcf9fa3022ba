"""Endpoint classes: a view written as hooks that react to a connection's messages."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

import trio

from ._errors import MessageValidationError, WebSocketDisconnect
from ._websocket import WebSocket, WebSocketState

__all__ = ["WebSocketEndpoint", "handles", "view_of"]

F = TypeVar("F", bound=Callable[..., Awaitable[None]])

_HANDLES = "_trio_bocaws_handles"  # where @handles leaves its message classes on a method


def handles(*message_classes: type) -> Callable[[F], F]:
    """Mark a method of a :class:`WebSocketEndpoint` as the handler of these message
    classes: ``async def on_say(self, ws, message)``.

    Raises:
        TypeError: No class was given, or something that is not a class.
    """
    if not message_classes or not all(isinstance(cls, type) for cls in message_classes):
        raise TypeError(f"@handles takes one or more message classes, not {message_classes!r}")

    def mark(method: F) -> F:
        setattr(method, _HANDLES, getattr(method, _HANDLES, ()) + message_classes)
        return method

    return mark


class WebSocketEndpoint:
    """A view as a class, for connections that react to messages.

    Register the class on a route as you would a view function
    (``app.add_websocket_route("/chat/{room}", Chat)``); each connection gets an instance,
    and the route's options apply (typed messages, ``caught_close_codes``...). The hooks
    run in this order:

    - :meth:`on_connect` with the WebSocket and the route's path and query parameters
      (declare them on ``on_connect`` as on a view function). The handshake is accepted
      when the first message is read, unless ``on_connect`` answers it first (accept, or
      reject with a status). Start background tasks in ``ws.nursery``.
    - :meth:`on_message` for every message, in order. By default it calls the method
      marked :func:`handles` for the message's class.
    - :meth:`on_disconnect` once the loop is over: the client left, the endpoint closed
      the connection, or the view is cancelled or failed.

    The close semantics are a view's: returning from a hook after ``ws.close()`` ends the
    connection; an exception closes it with 1011 (1007 for an invalid message, see
    :meth:`on_invalid_message`); a client close code outside ``caught_close_codes`` is
    logged as for a view.

    Attributes:
        close_codes: Close codes the endpoint sends, with what each means, for the AsyncAPI
            document (:meth:`~trio_bocaws.App.asyncapi`).
    """

    close_codes: ClassVar[Mapping[int, str]] = {}
    handlers: ClassVar[Mapping[type, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[type, str] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                for message_class in getattr(member, _HANDLES, ()):
                    found[message_class] = name
        cls.handlers = found

    async def on_connect(self, ws: WebSocket, *args: Any, **params: Any) -> None:
        """The connection arrived (not yet accepted unless this accepts it).

        Declare the route's path and query parameters as its parameters, as on a view
        function: ``async def on_connect(self, ws, room: str, limit: int = 10)``.
        """

    async def on_message(self, ws: WebSocket, message: Any) -> None:
        """A message arrived; by default, hand it to its class's :func:`handles` method.

        Raises:
            TypeError: No method handles the message's class (a bug in the endpoint: the
                client sees 1011).
        """
        for klass in type(message).__mro__:
            name = self.handlers.get(klass)
            if name is not None:
                await getattr(self, name)(ws, message)
                return
        raise TypeError(
            f"{type(self).__qualname__} has no handler for {type(message).__qualname__}: "
            "mark a method with @handles(...) or override on_message"
        )

    async def on_invalid_message(self, ws: WebSocket, error: MessageValidationError) -> None:
        """A message did not fit the route's typed messages. By default, re-raise: the
        client gets 1007. Override to answer and go on with the next message."""
        raise error

    async def on_disconnect(self, ws: WebSocket, code: int | None) -> None:
        """The loop is over. ``code`` is the client's close code when the client left,
        ``None`` otherwise (the endpoint closed or rejected it, or the view was cancelled
        or failed; ``ws.state`` tells which). It runs shielded from cancellation, so
        also after a server shutdown, for at most ``close_timeout`` seconds."""

    @classmethod
    def as_view(cls) -> Callable[..., Awaitable[None]]:
        """This endpoint as a view function (what a route does with the class).

        Its signature is :meth:`on_connect`'s without ``self``: the route reads the path
        and query parameters from it.
        """

        async def view(ws: WebSocket, **params: Any) -> None:
            endpoint = cls()
            await endpoint.on_connect(ws, **params)
            code: int | None = None
            try:
                while ws.state in _OPEN:
                    try:
                        message = await ws.receive()
                    except MessageValidationError as error:
                        await endpoint.on_invalid_message(ws, error)
                        continue
                    except WebSocketDisconnect as exc:
                        code = exc.code
                        if exc.code in ws.caught_close_codes:
                            return
                        raise
                    await endpoint.on_message(ws, message)
            finally:
                # Shielded, so that a cancelled view (server shutdown) can still tell the
                # others; bounded, so that it cannot hold the connection open.
                with trio.move_on_after(ws.config.close_timeout, shield=True):
                    await endpoint.on_disconnect(ws, code)

        signature = inspect.signature(cls.on_connect)
        # Without self; and without *args, which only the base class's hook has (so that
        # type checkers let subclasses name their own parameters).
        parameters = [
            parameter
            for parameter in list(signature.parameters.values())[1:]
            if parameter.kind is not inspect.Parameter.VAR_POSITIONAL
        ]
        try:
            hints = typing.get_type_hints(cls.on_connect)
        except Exception:  # unresolvable forward references: the route says what it lacks
            hints = {}
        view.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in parameters]
        )
        # The route resolves the view's annotations: hand it resolved ones, not strings
        # that would be looked up in this module.
        view.__annotations__ = {name: hint for name, hint in hints.items() if name != "return"}
        view.__qualname__ = cls.__qualname__
        view.__name__ = cls.__name__
        view.__doc__ = cls.__doc__
        view.__module__ = cls.__module__
        view.close_codes = cls.close_codes  # type: ignore[attr-defined]
        view.endpoint = cls  # type: ignore[attr-defined]
        return view


_OPEN = (WebSocketState.CONNECTING, WebSocketState.CONNECTED)


def view_of(
    view: Callable[..., Awaitable[None]] | type[WebSocketEndpoint],
) -> Callable[..., Awaitable[None]]:
    """The view function for a route: ``view`` itself, or an endpoint class's view."""
    if isinstance(view, type) and issubclass(view, WebSocketEndpoint):
        return view.as_view()
    return typing.cast("Callable[..., Awaitable[None]]", view)
