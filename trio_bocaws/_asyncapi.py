"""AsyncAPI 3.0 documents describing an App's WebSocket routes.

Every route becomes a channel (its address, path parameters, query parameters in the
WebSockets binding, the close codes it documents) with two operations: the messages the app
receives and the messages it sends. Typed messages get JSON Schemas derived from their attrs
classes; a union of classes becomes one message per class, and a union inside a class a
``oneOf`` with the tag field as ``discriminator``.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
    MutableSequence,
    Sequence,
)
from typing import Any, Final, Literal, Union

import attrs

from ._routing import WebSocketRoute
from ._typed import TypedMessages, converter_for, members_of, tag_of

__all__ = ["AsyncAPIConfig", "asyncapi_document", "serve_document"]

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_PARAMETER: Final = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")
_KEY: Final = re.compile(r"[^\w.\-]")

# The close codes every view may end with, whatever it does (guide/closing.md).
_VIEW_CLOSE_CODES: Final = {
    1000: "normal closure: the view returned",
    1001: "going away: the server is shutting down, or the view was cancelled or idle",
    1011: "internal error: the view raised",
}
_INVALID_CLOSE_CODE: Final = {
    1007: "invalid payload: a message did not fit its schema; the reason names the first "
    "problem, as `invalid message: $.path: what was expected`",
}


@attrs.frozen(kw_only=True)
class AsyncAPIConfig:
    """Serve the app's AsyncAPI document over HTTP: ``App(asyncapi=AsyncAPIConfig(...))``.

    ``GET path`` answers with the document as JSON (built on the first request, once every
    route is registered); other HTTP requests go to the app's ``http_app``.

    Attributes:
        title: The API's title.
        version: The API's version (yours, not AsyncAPI's).
        description: A description of the API, or ``None``.
        path: Where the document is served.
    """

    title: str = attrs.field(validator=attrs.validators.instance_of(str))
    version: str = attrs.field(validator=attrs.validators.instance_of(str))
    description: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    path: str = attrs.field(default="/asyncapi.json")

    @path.validator
    def _check_path(self, _: attrs.Attribute[str], value: object) -> None:
        if not isinstance(value, str) or not value.startswith("/"):
            raise ValueError(f"path must be a str starting with '/', not {value!r}")


def asyncapi_document(
    routes: Iterable[WebSocketRoute],
    *,
    title: str,
    version: str,
    description: str | None = None,
    servers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An AsyncAPI 3.0 document (a dict ready for :func:`json.dumps`) for ``routes``."""
    builder = _Builder()
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    document: dict[str, Any] = {"asyncapi": "3.0.0", "info": info}
    if servers:
        document["servers"] = dict(servers)
    document["defaultContentType"] = "application/json"
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for route in routes:
        name = builder.unique_key(_channel_name(route), channels)
        channels[name] = builder.channel(route)
        for action, value_type in (
            ("receive", route.config.receive_type),
            ("send", route.config.send_type),
        ):
            keys = builder.message_keys(value_type, route.config)
            operations[f"{name}.{action}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{name}"},
                "summary": (
                    "Messages the server receives from the client"
                    if action == "receive"
                    else "Messages the server sends to the client"
                ),
                "messages": [{"$ref": f"#/channels/{name}/messages/{key}"} for key in keys],
            }
            for key in keys:
                channels[name]["messages"][key] = {"$ref": f"#/components/messages/{key}"}
    document["channels"] = channels
    document["operations"] = operations
    components: dict[str, Any] = {}
    if builder.schemas:
        components["schemas"] = builder.schemas
    if builder.messages:
        components["messages"] = builder.messages
    if components:
        document["components"] = components
    return document


def serve_document(
    document_of: Callable[[], dict[str, Any]], path: str, http_app: ASGIApp
) -> ASGIApp:
    """An ASGI HTTP app: ``GET path`` gets the document, anything else ``http_app``."""
    body: bytes | None = None

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal body
        if scope["path"] != path or scope.get("method") not in ("GET", "HEAD"):
            await http_app(scope, receive, send)
            return
        if body is None:
            body = json.dumps(document_of(), indent=2).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    return app


def _channel_name(route: WebSocketRoute) -> str:
    view = route.view
    name = getattr(view, "__name__", None) or route.pattern
    return _KEY.sub("_", name) or "root"


def _json_type(annotation: Any) -> dict[str, Any]:
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    return {"type": "string"}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if _is_union(annotation):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _is_union(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is Union or origin is types.UnionType


def _first_paragraph(text: str | None) -> str | None:
    if not text:
        return None
    paragraph = inspect.cleandoc(text).split("\n\n", 1)[0]
    return " ".join(paragraph.split()) or None


class _Builder:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self._schema_names: dict[type, str] = {}

    @staticmethod
    def unique_key(name: str, taken: Mapping[str, Any]) -> str:
        key, number = name, 2
        while key in taken:
            key, number = f"{name}_{number}", number + 1
        return key

    # -- Channels --

    def channel(self, route: WebSocketRoute) -> dict[str, Any]:
        found = list(_PARAMETER.finditer(route.pattern))
        address = _PARAMETER.sub(lambda m: "{" + m.group(1).strip() + "}", route.pattern)
        channel: dict[str, Any] = {"address": address, "messages": {}}
        summary = _first_paragraph(getattr(route.view, "__doc__", None))
        if summary:
            channel["description"] = summary
        if found:
            channel["parameters"] = {
                m.group(1).strip(): {
                    "description": f"path parameter ({(m.group(2) or 'str').strip()})"
                }
                for m in found
            }
        query = self._query_schema(route, {m.group(1).strip() for m in found})
        if query is not None:
            channel["bindings"] = {"ws": {"query": query, "bindingVersion": "0.1.0"}}
        codes = dict(_VIEW_CLOSE_CODES)
        if members_of(route.config.receive_type) is not None:
            codes.update(_INVALID_CLOSE_CODE)
        codes.update(getattr(route.view, "close_codes", None) or {})
        channel["x-close-codes"] = [
            {"code": code, "description": codes[code]} for code in sorted(codes)
        ]
        return channel

    def _query_schema(self, route: WebSocketRoute, path_names: set[str]) -> dict[str, Any] | None:
        signature = inspect.signature(route.view)
        try:
            hints = typing.get_type_hints(route.view)
        except Exception:
            hints = {}
        properties: dict[str, Any] = {}
        required: list[str] = []
        for parameter in list(signature.parameters.values())[1:]:
            if parameter.name in path_names or parameter.kind in (
                inspect.Parameter.VAR_KEYWORD,
                inspect.Parameter.VAR_POSITIONAL,
            ):
                continue
            base, optional = _unwrap_optional(hints.get(parameter.name, str))
            schema = _json_type(base)
            if parameter.default is not inspect.Parameter.empty:
                if parameter.default is not None:
                    schema["default"] = parameter.default
            elif not optional:
                required.append(parameter.name)
            properties[parameter.name] = schema
        if not properties:
            return None
        query: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            query["required"] = required
        return query

    # -- Messages --

    def message_keys(self, value_type: Any, config: Any) -> list[str]:
        classes = members_of(value_type)
        if classes is None:
            return [self._plain_message(value_type)]
        encoding = value_type.encoding if isinstance(value_type, TypedMessages) else "json"
        content_type = "application/msgpack" if encoding == "msgpack" else "application/json"
        converter = converter_for(value_type, config.converter)
        keys = []
        for cls in classes:
            schema_name = self._schema_name(cls, converter)
            key = schema_name if encoding == "json" else f"{schema_name}.msgpack"
            if key not in self.messages:
                message: dict[str, Any] = {
                    "name": cls.__name__,
                    "contentType": content_type,
                    "payload": {"$ref": f"#/components/schemas/{schema_name}"},
                }
                summary = _first_paragraph(cls.__doc__)
                if summary and not summary.startswith(f"{cls.__name__}("):  # attrs' default
                    message["summary"] = summary
                self.messages[key] = message
            keys.append(key)
        return keys

    def _plain_message(self, value_type: str) -> str:
        plain: dict[str, tuple[str, dict[str, Any], str]] = {
            "text": ("text/plain", {"type": "string"}, "A text message"),
            "bytes": (
                "application/octet-stream",
                {"type": "string", "format": "binary"},
                "A binary message",
            ),
            "json": ("application/json", {}, "A JSON document, in a text message"),
            "event": ("application/octet-stream", {}, "A text or binary message"),
        }
        content_type, payload, summary = plain[value_type]
        key = {"text": "Text", "bytes": "Bytes", "json": "JSON", "event": "Any"}[value_type]
        self.messages.setdefault(
            key,
            {"name": key, "summary": summary, "contentType": content_type, "payload": payload},
        )
        return key

    # -- JSON Schemas --

    def _schema_name(self, cls: type, converter: Any) -> str:
        name = self._schema_names.get(cls)
        if name is not None:
            return name
        name = self.unique_key(_KEY.sub("_", cls.__name__), self.schemas)
        self._schema_names[cls] = name
        self.schemas[name] = {}  # reserved: a class may refer to itself
        self.schemas[name] = self._object_schema(cls, converter)
        return name

    def _ref(self, cls: type, converter: Any) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{self._schema_name(cls, converter)}"}

    def _object_schema(self, cls: type, converter: Any) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in attrs.fields(cls):
            if not field.init:
                continue
            field_schema = self.schema(hints.get(field.name, Any), converter)
            if field.default is attrs.NOTHING:
                required.append(field.name)
            elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                default = _json_default(field.default, converter)
                if default is not _NO_DEFAULT:
                    field_schema = {**field_schema, "default": default}
            properties[field.name] = field_schema
        schema: dict[str, Any] = {"type": "object", "title": cls.__name__}
        summary = _first_paragraph(cls.__doc__)
        if summary and not summary.startswith(f"{cls.__name__}("):
            schema["description"] = summary
        schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def schema(self, annotation: Any, converter: Any) -> dict[str, Any]:
        """The JSON Schema of a field's type, as the converter (un)structures it."""
        if annotation is Any or annotation is object:
            return {}
        if annotation is type(None):
            return {"type": "null"}
        if annotation in (bool, int, float, str):
            return _json_type(annotation)
        if annotation is datetime.datetime:
            return {"type": "string", "format": "date-time"}
        if annotation is datetime.date:
            return {"type": "string", "format": "date"}
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return _enum_schema([member.value for member in annotation])
        if isinstance(annotation, type) and attrs.has(annotation):
            return self._ref(annotation, converter)
        origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is Literal:
            values = list(arguments)
            return {"const": values[0]} if len(values) == 1 else _enum_schema(values)
        if _is_union(annotation):
            return self._union_schema(arguments, converter)
        if origin in (list, set, frozenset) or origin in _SEQUENCES:
            items = self.schema(arguments[0], converter) if arguments else {}
            array: dict[str, Any] = {"type": "array", "items": items}
            if origin in (set, frozenset):
                array["uniqueItems"] = True
            return array
        if origin is tuple:
            if len(arguments) == 2 and arguments[1] is Ellipsis:
                return {"type": "array", "items": self.schema(arguments[0], converter)}
            return {
                "type": "array",
                "items": [self.schema(argument, converter) for argument in arguments],
                "minItems": len(arguments),
                "maxItems": len(arguments),
            }
        if origin in (dict, Mapping) or origin in _MAPPINGS:
            values_schema = self.schema(arguments[1], converter) if arguments else {}
            return {"type": "object", "additionalProperties": values_schema}
        if annotation in (list, tuple, set, frozenset):
            return {"type": "array"}
        if annotation is dict:
            return {"type": "object"}
        return {}

    def _union_schema(self, arguments: Sequence[Any], converter: Any) -> dict[str, Any]:
        present = [argument for argument in arguments if argument is not type(None)]
        nullable = len(present) < len(arguments)
        classes = members_of(Union[tuple(present)]) if len(present) > 1 else None  # noqa: UP007
        tag = tag_of(classes) if classes is not None else None
        if classes is not None and tag is not None:
            inner: dict[str, Any] = {
                "oneOf": [self._ref(cls, converter) for cls in classes],
                "discriminator": tag[0],
            }
        elif len(present) == 1:
            inner = self.schema(present[0], converter)
        else:
            inner = {"anyOf": [self.schema(argument, converter) for argument in present]}
        if nullable:
            return {"anyOf": [inner, {"type": "null"}]}
        return inner


_SEQUENCES: Final = (Sequence, MutableSequence)
_MAPPINGS: Final = (Mapping, MutableMapping)
_NO_DEFAULT: Final = object()


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    if all(isinstance(value, str) for value in values):
        schema["type"] = "string"
    elif all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        schema["type"] = "integer"
    return schema


def _json_default(value: Any, converter: Any) -> Any:
    try:
        unstructured = converter.unstructure(value)
        json.dumps(unstructured, allow_nan=False)
    except (TypeError, ValueError):
        return _NO_DEFAULT
    return unstructured
