"""Typed messages: attrs classes in and out of ASGI events, validated by cattrs.

A route's ``receive_type`` or ``send_type`` may be an attrs class, a union of attrs classes
told apart by a tag field (a field typed ``Literal["..."]`` with a different value in each
class), or :class:`TypedMessages` around either to choose MessagePack or a converter. The
codec built from it turns a ``websocket.receive`` event into a validated instance and an
instance into a ``websocket.send`` event.
"""

from __future__ import annotations

import datetime
import enum
import functools
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, Literal, Union

import attrs
import cattrs
from cattrs.errors import (
    CattrsError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from ._errors import MessageValidationError

__all__ = [
    "Encoding",
    "MessageCodec",
    "TypedMessages",
    "check_typed",
    "close_reason",
    "codec_for",
    "converter_for",
    "is_typed",
    "members_of",
    "message_converter",
    "tag_of",
]

Encoding = Literal["json", "msgpack"]
_ENCODINGS: Final = ("json", "msgpack")
_MISSING: Final = object()
Event = typing.MutableMapping[str, Any]


# -- The converter ---------------------------------------------------------------------------


class _Mismatch(TypeError):
    """A value of the wrong JSON type; the error path says what was expected."""


# cattrs's own hooks call str(), int() and float() on whatever comes: "5" would become 5
# and 5 would become "5". A message checked at the boundary wants JSON's own types. (The
# exact-type test first: these run once per field of every message.)


def _structure_str(value: Any, _: Any) -> str:
    if type(value) is str:
        return value
    raise _Mismatch(str)


def _structure_int(value: Any, _: Any) -> int:
    if type(value) is int:
        return value
    raise _Mismatch(int)


def _structure_float(value: Any, _: Any) -> float:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    raise _Mismatch(float)


def _structure_bool(value: Any, _: Any) -> bool:
    if type(value) is bool:
        return value
    raise _Mismatch(bool)


def _structure_datetime(value: Any, _: Any) -> datetime.datetime:
    if not isinstance(value, str):
        raise _Mismatch(datetime.datetime)
    if sys.version_info < (3, 11) and value.endswith(("Z", "z")):  # pragma: no cover
        value = value[:-1] + "+00:00"  # 3.10's fromisoformat does not read the "Z" suffix
    return datetime.datetime.fromisoformat(value)


def _structure_date(value: Any, _: Any) -> datetime.date:
    if not isinstance(value, str):
        raise _Mismatch(datetime.date)
    return datetime.date.fromisoformat(value)


def message_converter() -> cattrs.Converter:
    """A new cattrs converter set up as trio_bocaws's default for typed messages.

    It takes JSON's types strictly (no ``"5"`` for an ``int``, no ``5`` for a ``str``; an
    ``int`` is fine for a ``float``), and reads and writes :class:`datetime.datetime` and
    :class:`datetime.date` as ISO 8601 strings. Start from it to add your own hooks, and
    pass it as ``converter=`` to :class:`~trio_bocaws.WebSocketConfig` or
    :class:`~trio_bocaws.App`.
    """
    # Sets go out as JSON arrays (and MessagePack arrays).
    converter = cattrs.Converter(unstruct_collection_overrides={AbstractSet: list})
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(datetime.datetime, _structure_datetime)
    converter.register_structure_hook(datetime.date, _structure_date)
    converter.register_unstructure_hook(datetime.datetime, datetime.datetime.isoformat)
    converter.register_unstructure_hook(datetime.date, datetime.date.isoformat)
    return converter


# -- Which types are message types -----------------------------------------------------------


def _is_union(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is Union or origin is types.UnionType


def members_of(value_type: Any) -> tuple[type, ...] | None:
    """The attrs classes of a typed value type, or ``None`` for anything else."""
    if isinstance(value_type, TypedMessages):
        return value_type.classes
    if isinstance(value_type, type) and attrs.has(value_type):
        return (value_type,)
    if _is_union(value_type):
        classes = typing.get_args(value_type)
        if all(isinstance(cls, type) and attrs.has(cls) for cls in classes):
            return classes
    return None


def _literal_values(cls: type, name: str) -> tuple[Any, ...] | None:
    hints = typing.get_type_hints(cls)
    annotation = hints.get(name)
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return None


def tag_of(classes: Sequence[type]) -> tuple[str, dict[Any, type]] | None:
    """The tag field of a union (its name and which value means which class), or ``None``
    when the classes share no ``Literal`` field with a different value in each."""
    candidates: list[str] = []
    for field in attrs.fields(classes[0]):
        if all(
            any(other.name == field.name for other in attrs.fields(cls))
            and _literal_values(cls, field.name) is not None
            for cls in classes
        ):
            candidates.append(field.name)
    # "type" first: the usual name, and the one the docs show.
    candidates.sort(key=lambda name: name != "type")
    for name in candidates:
        table: dict[Any, type] = {}
        for cls in classes:
            for value in _literal_values(cls, name) or ():
                if value in table:
                    break
                table[value] = cls
            else:
                continue
            break
        else:
            return name, table
    return None


@attrs.frozen
class TypedMessages:
    """Typed messages with options: an attrs class or a union of them, and how to carry them.

    Pass it where a value type goes (``receive_type``, ``send_type``, ``value_type``) when a
    bare class or union is not enough::

        moves = TypedMessages(Move | Chat, encoding="msgpack")
        app.add_websocket_route("/game", game, value_type=moves)

    Args:
        types: An attrs class, or a union of attrs classes with a tag field (a field typed
            ``Literal["..."]``, with a different value in each class).
        encoding: ``"json"`` (text frames, the default) or ``"msgpack"`` (binary frames,
            MessagePack; needs ``pip install trio-bocaws[msgpack]``).
        converter: A cattrs converter for these messages; ``None`` uses the route's
            (:func:`message_converter` unless the config or the App gives another).

    Raises:
        TypeError: ``types`` is not an attrs class or a union of attrs classes, or a
            union's classes have no tag field.
        ValueError: ``encoding`` is unknown.
        ImportError: ``encoding="msgpack"`` without the msgpack package.
    """

    types: Any
    encoding: Encoding = attrs.field(default="json", kw_only=True)
    converter: cattrs.BaseConverter | None = attrs.field(default=None, kw_only=True)
    classes: tuple[type, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        classes = members_of(self.types)
        if classes is None or isinstance(self.types, TypedMessages):
            raise TypeError(
                f"TypedMessages takes an attrs class or a union of attrs classes, "
                f"not {self.types!r}"
            )
        if len(classes) > 1 and tag_of(classes) is None:
            names = ", ".join(cls.__name__ for cls in classes)
            raise TypeError(
                f"the classes of a union of messages need a tag field, a field typed "
                f"Literal[...] with a different value in each class "
                f'(type: Literal["join"]); {names} have none'
            )
        if self.encoding not in _ENCODINGS:
            raise ValueError(f"encoding must be 'json' or 'msgpack', not {self.encoding!r}")
        if self.encoding == "msgpack":
            _msgpack()
        if self.converter is not None and not isinstance(self.converter, cattrs.BaseConverter):
            raise TypeError(f"converter must be a cattrs converter, not {self.converter!r}")
        object.__setattr__(self, "classes", classes)


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError:
        raise ImportError(
            'encoding="msgpack" needs the msgpack package: pip install trio-bocaws[msgpack]'
        ) from None
    return msgpack


def is_typed(value: object) -> bool:
    """Whether ``value`` names typed messages (not one of the four value type strings)."""
    return isinstance(value, TypedMessages) or members_of(value) is not None


def check_typed(value: object, converter: cattrs.BaseConverter | None = None) -> None:
    """Raise TypeError if typed messages ``value`` cannot be used: a union with no tag, or
    a field type the converter cannot structure (found here, not at the first message)."""
    try:
        codec_for(value, converter)
    except cattrs.StructureHandlerNotFoundError as exc:
        raise TypeError(
            f"{exc} (a field of {value!r}; register a structure hook for it on a converter "
            "made with message_converter())"
        ) from None


# -- The codec -------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Made once: json.loads() and json.dumps() with options build a new decoder or encoder on
# every call.
_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant)
_JSON_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


_DEFAULT_CONVERTER: Final = message_converter()


class MessageCodec:
    """Typed messages in and out of ASGI events, built once per value type and converter."""

    __slots__ = (
        "_loads",
        "_structure",
        "_unstructure",
        "classes",
        "converter",
        "encoding",
        "names",
        "tag",
    )

    def __init__(self, spec: TypedMessages, converter: cattrs.BaseConverter) -> None:
        self.classes = spec.classes
        self.encoding = spec.encoding
        self.converter = converter
        self.names = " or ".join(cls.__name__ for cls in self.classes)
        self._structure = {cls: converter.get_structure_hook(cls) for cls in self.classes}
        self._unstructure = {cls: converter.get_unstructure_hook(cls) for cls in self.classes}
        self.tag = tag_of(self.classes) if len(self.classes) > 1 else None
        self._loads = self._loads_json if self.encoding == "json" else self._loads_msgpack

    # -- In --

    def decode(self, event: Event) -> Any:
        """The instance a ``websocket.receive`` event carries.

        Raises:
            MessageValidationError: The message is not valid JSON (or MessagePack), or does
                not fit the classes; ``errors`` says where and why.
        """
        return self.structure(self._loads(event))

    def _loads_json(self, event: Event) -> Any:
        text = event.get("text")
        if text is None:
            data = event.get("bytes") or b""
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise MessageValidationError(
                    [("$", "expected JSON, got a binary message that is not UTF-8")], data
                ) from None
        try:
            return _JSON_DECODER.decode(text)
        except ValueError as exc:
            raise MessageValidationError([("$", f"invalid JSON: {exc}")], text) from None

    def _loads_msgpack(self, event: Event) -> Any:
        data = event.get("bytes")
        if data is None:
            text = event.get("text")
            raise MessageValidationError(
                [("$", "expected a binary MessagePack message, got a text message")], text
            )
        try:
            return _msgpack().unpackb(data)
        except Exception as exc:
            raise MessageValidationError([("$", f"invalid MessagePack: {exc}")], data) from None

    def structure(self, raw: Any) -> Any:
        """Validate a decoded document into an instance of one of the classes."""
        if type(raw) is not dict:
            raise MessageValidationError(
                [("$", f"expected an object ({self.names}), got {_show(raw)}")], raw
            )
        if self.tag is None:
            cls = self.classes[0]
        else:
            name, table = self.tag
            tag = raw.get(name, _MISSING)
            found = table.get(tag) if isinstance(tag, (str, int, float, bool)) else None
            if found is None:
                raise MessageValidationError([_tag_problem("$", name, table, tag)], raw)
            cls = found
        try:
            return self._structure[cls](raw, cls)
        except Exception as exc:
            raise MessageValidationError(list(_problems(exc, "$", raw, cls)), raw) from exc

    # -- Out --

    def encode(self, message: Any) -> Event:
        """The ``websocket.send`` event for ``message``.

        Raises:
            TypeError: ``message`` is not an instance of one of the classes. Nothing is sent.
        """
        unstructure = self._unstructure.get(type(message))
        if unstructure is None:
            unstructure = self._unstructure_subclass(message)
        data = unstructure(message)
        if self.encoding == "json":
            return {"type": "websocket.send", "text": _JSON_ENCODER.encode(data)}
        return {"type": "websocket.send", "bytes": _msgpack().packb(data)}

    def _unstructure_subclass(self, message: Any) -> Callable[[Any], Any]:
        for cls in self.classes:
            if isinstance(message, cls):
                return self._unstructure[cls]
        raise TypeError(
            f"send() on this WebSocket takes {self.names}, not {type(message).__name__}"
        )


@functools.lru_cache(maxsize=256)
def _codec(spec: TypedMessages, converter: cattrs.BaseConverter) -> MessageCodec:
    return MessageCodec(spec, converter)


def codec_for(value_type: Any, converter: cattrs.BaseConverter | None = None) -> MessageCodec:
    """The codec of a typed value type (built once, then shared by every connection).

    ``converter`` is the config's; a :class:`TypedMessages` with its own converter wins.
    """
    spec = value_type if isinstance(value_type, TypedMessages) else TypedMessages(value_type)
    return _codec(spec, converter_for(spec, converter))


def converter_for(
    value_type: Any, converter: cattrs.BaseConverter | None = None
) -> cattrs.BaseConverter:
    """The converter that typed messages ``value_type`` use on a route with ``converter``."""
    own = value_type.converter if isinstance(value_type, TypedMessages) else None
    return own or converter or _DEFAULT_CONVERTER


def close_reason(error: MessageValidationError) -> str:
    """A close reason naming the first problem, within the 123 bytes a close frame allows."""
    path, message = error.errors[0] if error.errors else ("$", "invalid message")
    reason = f"invalid message: {path}: {message}"
    encoded = reason.encode("utf-8")
    if len(encoded) <= 123:
        return reason
    return encoded[:120].decode("utf-8", "ignore") + "..."


# -- Readable errors -------------------------------------------------------------------------


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except ValueError:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(annotation: Any) -> str:
    """What a value of ``annotation`` looks like, in a message to a client."""
    if annotation is type(None):
        return "null"
    if annotation in (str, int, float, bool):
        return str(annotation.__name__)
    if annotation is datetime.datetime:
        return "an ISO 8601 date and time"
    if annotation is datetime.date:
        return "an ISO 8601 date"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(_show(member.value) for member in annotation)
    if isinstance(annotation, type) and attrs.has(annotation):
        return f"an object ({annotation.__name__})"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(_show(value) for value in typing.get_args(annotation))
    if _is_union(annotation):
        return " or ".join(_describe(member) for member in typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset) or origin is Sequence:
        return "a list"
    if origin in (dict, Mapping) or annotation is dict:
        return "an object"
    return getattr(annotation, "__name__", repr(annotation))


def _tag_problem(path: str, name: str, table: Mapping[Any, type], tag: Any) -> tuple[str, str]:
    expected = ", ".join(_show(value) for value in table)
    if tag is _MISSING:
        return f"{path}.{name}", f"required field missing (one of {expected})"
    return f"{path}.{name}", f"expected one of {expected}, got {_show(tag)}"


def _child(value: Any, key: Any) -> Any:
    try:
        return value[key]
    except (KeyError, IndexError, TypeError):
        return _MISSING


def _index_path(path: str, index: Any) -> str:
    return f"{path}[{index}]" if isinstance(index, int) else f"{path}[{_show(index)}]"


def _problems(
    exc: BaseException, path: str, value: Any, annotation: Any
) -> typing.Iterator[tuple[str, str]]:
    """(path, message) pairs for a cattrs structuring error, walking the value alongside."""
    if isinstance(exc, ClassValidationError):
        if not isinstance(value, Mapping):
            yield path, f"expected {_describe(annotation)}, got {_show(value)}"
            return
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            child_path = f"{path}.{note.name}"
            if isinstance(inner, KeyError) and note.name not in value:
                yield child_path, "required field missing"
            else:
                yield from _problems(inner, child_path, value.get(note.name), note.type)
        for inner in without:
            yield from _leaf(inner, path, value, annotation)
    elif isinstance(exc, IterableValidationError):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            yield path, f"expected {_describe(annotation)}, got {_show(value)}"
            return
        items, rest = exc.group_exceptions()
        for inner, item in items:
            yield from _problems(
                inner, _index_path(path, item.index), _child(value, item.index), item.type
            )
        for inner in rest:
            yield from _leaf(inner, path, value, annotation)
    else:
        yield from _leaf(exc, path, value, annotation)


def _leaf(
    exc: BaseException, path: str, value: Any, annotation: Any
) -> typing.Iterator[tuple[str, str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        yield path, "unexpected field(s): " + ", ".join(sorted(exc.extra_fields))
        return
    members = None
    if _is_union(annotation):
        present = tuple(a for a in typing.get_args(annotation) if a is not type(None))
        members = members_of(Union[present]) if len(present) > 1 else None  # noqa: UP007
    if members is not None and isinstance(value, dict):
        tag = tag_of(members)
        if tag is not None:
            name, table = tag
            found = value.get(name, _MISSING)
            if not isinstance(found, (str, int, float, bool)) or found not in table:
                yield _tag_problem(path, name, table, found)
                return
            annotation = table[found]  # the tag chose a class, which refused the fields
    if isinstance(annotation, type) and attrs.has(annotation) and isinstance(value, Mapping):
        # The fields fitted and the class refused them: an attrs validator's own words.
        yield path, str(exc) or type(exc).__name__
    elif isinstance(exc, (_Mismatch, KeyError, TypeError, ValueError, CattrsError)):
        yield path, f"expected {_describe(annotation)}, got {_show(value)}"
    else:
        yield path, str(exc) or type(exc).__name__
