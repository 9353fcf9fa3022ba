"""WebSocket routes: URL patterns, and filling a view's parameters from the request."""

from __future__ import annotations

import inspect
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, Union

import attrs

from ._config import WebSocketConfig
from ._datastructures import query_params_from_scope
from ._websocket import WebSocket

_NO_ARGUMENTS: Final[Mapping[str, Any]] = types.MappingProxyType({})

__all__ = [
    "APP_DEFAULT",
    "CONVERTERS",
    "Authenticate",
    "ParameterError",
    "Router",
    "WebSocketRoute",
]

View = Callable[..., typing.Awaitable[None]]
Authenticate = Callable[[WebSocket], Any]
"""An authentication hook: ``(ws) -> user``, sync or async."""


class _AppDefault:
    def __repr__(self) -> str:
        return "APP_DEFAULT"


APP_DEFAULT: Final = _AppDefault()
"""A route's ``authenticate`` when it uses the app's hook."""


@attrs.frozen
class _Converter:
    regex: str
    convert: Callable[[str], Any]


CONVERTERS: Final[Mapping[str, _Converter]] = types.MappingProxyType(
    {
        "str": _Converter(r"[^/]+", str),
        "int": _Converter(r"[0-9]+", int),
        "float": _Converter(r"[0-9]+(?:\.[0-9]+)?", float),
        "path": _Converter(r".+", str),
        "uuid": _Converter(
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            uuid.UUID,
        ),
    }
)
"""Path parameter converters: ``{name}`` is ``{name:str}`` (one path segment)."""

_PARAMETER = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")


class ParameterError(ValueError):
    """A view parameter could not be filled from the request (the handshake is refused)."""


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(value)


_QUERY_TYPES: Final[dict[Any, tuple[str, Callable[[str], Any]]]] = {
    str: ("a str", str),
    int: ("an int", int),
    float: ("a float", float),
    bool: ("a bool (true/false, 1/0, yes/no, on/off)", _parse_bool),
    inspect.Parameter.empty: ("a str", str),
    Any: ("a str", str),
}


@attrs.frozen
class _QueryParameter:
    name: str
    description: str
    convert: Callable[[str], Any]
    default: Any  # inspect.Parameter.empty when required


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` and ``Optional[X]`` give ``(X, True)``; anything else ``(it, False)``."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1 and len(typing.get_args(annotation)) == 2:
            return members[0], True
    return annotation, False


def _view_name(view: Any) -> str:
    return getattr(view, "__qualname__", None) or repr(view)


def _is_async(view: Any) -> bool:
    if inspect.iscoroutinefunction(view):
        return True
    call = getattr(view, "__call__", None)  # noqa: B004 - instances with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


@attrs.frozen(eq=False)
class WebSocketRoute:
    """A URL pattern bound to a WebSocket view, with the options its connections use."""

    pattern: str
    view: View
    config: WebSocketConfig
    _regex: re.Pattern[str] = attrs.field(alias="regex", repr=False)
    _path_converters: Mapping[str, Callable[[str], Any]] = attrs.field(
        alias="path_converters", repr=False
    )
    _query: tuple[_QueryParameter, ...] = attrs.field(alias="query", repr=False)
    _pass_path_params: frozenset[str] = attrs.field(alias="pass_path_params", repr=False)
    authenticate: Any = attrs.field(default=APP_DEFAULT, kw_only=True)

    @classmethod
    def create(
        cls,
        pattern: str,
        view: View,
        config: WebSocketConfig,
        *,
        authenticate: Any = APP_DEFAULT,
    ) -> WebSocketRoute:
        """Compile ``pattern`` and check ``view`` against it.

        Raises:
            ValueError: The pattern is malformed or names an unknown converter.
            TypeError: The view is not an ``async def``, or its parameters do not fit the
                pattern (the message names the view).
        """
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ValueError(f"a route pattern must be a str starting with '/', not {pattern!r}")
        name = _view_name(view)
        if not _is_async(view):
            raise TypeError(
                f"WebSocket view {name} must be an async function (async def), "
                f"got {type(view).__name__}"
            )
        regex, converters = _compile(pattern)
        path_names = set(converters)

        signature = inspect.signature(view)
        parameters = list(signature.parameters.values())
        if not parameters or parameters[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(f"WebSocket view {name} must take the WebSocket as first parameter")
        try:
            hints = typing.get_type_hints(view)
        except Exception:  # unresolvable forward references: fall back to the raw ones
            hints = {p.name: p.annotation for p in parameters}

        takes_any_keyword = False
        passed: set[str] = set()
        query: list[_QueryParameter] = []
        for parameter in parameters[1:]:
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(f"WebSocket view {name} cannot take *{parameter.name}")
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                takes_any_keyword = True
                continue
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                raise TypeError(
                    f"WebSocket view {name}: parameter {parameter.name!r} must be passable "
                    "by keyword"
                )
            annotation = hints.get(parameter.name, inspect.Parameter.empty)
            if parameter.name in path_names:
                passed.add(parameter.name)
                base, _ = _unwrap_optional(annotation)
                if converters[parameter.name] is str and base in (int, float, bool):
                    converters[parameter.name] = _QUERY_TYPES[base][1]
                continue
            base, optional = _unwrap_optional(annotation)
            if base not in _QUERY_TYPES:
                raise TypeError(
                    f"WebSocket view {name}: parameter {parameter.name!r} is annotated "
                    f"{annotation!r}, which cannot be read from a query string "
                    "(use str, int, float or bool, optionally with None)"
                )
            default = parameter.default
            if default is inspect.Parameter.empty and optional:
                default = None
            description, convert = _QUERY_TYPES[base]
            query.append(_QueryParameter(parameter.name, description, convert, default))
        missing = path_names - passed
        if missing and not takes_any_keyword:
            raise TypeError(
                f"WebSocket view {name} has no parameter for path parameter(s) "
                f"{', '.join(sorted(missing))} of {pattern!r}"
            )
        return cls(
            pattern=pattern,
            view=view,
            config=config,
            regex=regex,
            path_converters=converters,
            query=tuple(query),
            pass_path_params=frozenset(path_names),
            authenticate=authenticate,
        )

    @property
    def shape(self) -> str:
        """The pattern with parameter names left out (two routes of one shape collide)."""
        return _PARAMETER.sub(lambda m: "{" + (m.group(2) or "str").strip() + "}", self.pattern)

    def match(self, path: str) -> dict[str, str] | None:
        """The raw path parameters if ``path`` matches, else ``None``."""
        found = self._regex.fullmatch(path)
        return None if found is None else found.groupdict()

    def arguments(
        self, request: WebSocket | Mapping[str, Any], raw_path_params: Mapping[str, str]
    ) -> Mapping[str, Any]:
        """The keyword arguments for the view (read-only), from the path parameters and the
        query string of ``request`` (a WebSocket, or its ASGI scope).

        Raises:
            ParameterError: A path or query value is missing or does not convert; the message
                says which and why.
        """
        if not raw_path_params and not self._query:
            return _NO_ARGUMENTS  # one shared mapping, not a dict per connection
        arguments: dict[str, Any] = {}
        for name, value in raw_path_params.items():
            try:
                arguments[name] = self._path_converters[name](value)
            except ValueError:
                raise ParameterError(f"path parameter {name!r} is invalid: {value!r}") from None
        if self._query:
            params = (
                request.query_params
                if isinstance(request, WebSocket)
                else query_params_from_scope(request)
            )
            for parameter in self._query:
                raw: str | None = params.get(parameter.name)
                if raw is None:
                    if parameter.default is inspect.Parameter.empty:
                        raise ParameterError(f"missing query parameter {parameter.name!r}")
                    arguments[parameter.name] = parameter.default
                    continue
                try:
                    arguments[parameter.name] = parameter.convert(raw)
                except ValueError:
                    raise ParameterError(
                        f"query parameter {parameter.name!r} must be {parameter.description}, "
                        f"got {raw!r}"
                    ) from None
        return arguments


def _compile(pattern: str) -> tuple[re.Pattern[str], dict[str, Callable[[str], Any]]]:
    regex = "^"
    converters: dict[str, Callable[[str], Any]] = {}
    position = 0
    for found in _PARAMETER.finditer(pattern):
        name, kind = found.group(1).strip(), (found.group(2) or "str").strip()
        if not name.isidentifier():
            raise ValueError(f"invalid parameter name {name!r} in route pattern {pattern!r}")
        if name in converters:
            raise ValueError(f"parameter {name!r} appears twice in route pattern {pattern!r}")
        converter = CONVERTERS.get(kind)
        if converter is None:
            known = ", ".join(CONVERTERS)
            raise ValueError(
                f"unknown converter {kind!r} in route pattern {pattern!r} (known: {known})"
            )
        literal = pattern[position : found.start()]
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced braces in route pattern {pattern!r}")
        regex += re.escape(literal) + f"(?P<{name}>{converter.regex})"
        converters[name] = converter.convert
        position = found.end()
    rest = pattern[position:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"unbalanced braces in route pattern {pattern!r}")
    regex += re.escape(rest) + "$"
    return re.compile(regex), converters


class Router:
    """WebSocket routes, matched in the order they were added."""

    def __init__(self) -> None:
        self._routes: list[WebSocketRoute] = []
        self._shapes: dict[str, WebSocketRoute] = {}

    @property
    def routes(self) -> tuple[WebSocketRoute, ...]:
        return tuple(self._routes)

    def add(self, route: WebSocketRoute) -> None:
        """Add a route.

        Raises:
            ValueError: A route with the same pattern (parameter names aside) exists.
        """
        existing = self._shapes.get(route.shape)
        if existing is not None:
            raise ValueError(
                f"a WebSocket route for {route.pattern!r} already exists "
                f"({existing.pattern!r} -> {_view_name(existing.view)})"
            )
        self._shapes[route.shape] = route
        self._routes.append(route)

    def match(self, path: str) -> tuple[WebSocketRoute, dict[str, str]] | None:
        for route in self._routes:
            params = route.match(path)
            if params is not None:
                return route, params
        return None
