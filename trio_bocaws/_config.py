"""Frozen, validated configuration for WebSocket connections."""

from __future__ import annotations

import difflib
from collections.abc import Container, Iterable, Iterator, Mapping
from typing import Any, Final, Literal

import attrs
import cattrs

from ._typed import check_typed, is_typed
from ._validation import validate_close_code, validate_close_reason

__all__ = ["ALL_CLOSE_CODES", "VALUE_TYPES", "CloseCodes", "ValueType", "WebSocketConfig"]

ValueType = Literal["text", "bytes", "json", "event"]
VALUE_TYPES: Final = ("text", "bytes", "json", "event")


class CloseCodes(Container[int]):
    """An immutable set of close codes, or every code.

    ``caught_close_codes`` converts to this: the builtin :func:`all` means every code,
    any iterable of ints means those codes, ``()`` means none.
    """

    __slots__ = ("_codes",)

    def __init__(self, codes: Iterable[int] | None) -> None:
        # None is the "every code" form; the converter maps the builtin `all` onto it.
        self._codes = None if codes is None else frozenset(codes)

    @property
    def is_all(self) -> bool:
        """Whether every code is in the set."""
        return self._codes is None

    def __contains__(self, code: object) -> bool:
        return self._codes is None or code in self._codes

    def __iter__(self) -> Iterator[int]:
        if self._codes is None:
            raise TypeError("the set of all close codes cannot be listed")
        return iter(sorted(self._codes))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CloseCodes):
            return self._codes == other._codes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._codes)

    def __repr__(self) -> str:
        if self._codes is None:
            return "CloseCodes(all)"
        return f"CloseCodes({tuple(sorted(self._codes))!r})"


ALL_CLOSE_CODES: Final = CloseCodes(None)
_DEFAULT_CAUGHT: Final = CloseCodes((1000, 1001))


def _to_close_codes(value: object) -> CloseCodes:
    if value is None:
        return _DEFAULT_CAUGHT
    if value is all:
        return ALL_CLOSE_CODES
    if isinstance(value, CloseCodes):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            "caught_close_codes must be a tuple of ints, the builtin `all`, or None, "
            f"not {value!r}"
        )
    codes = tuple(value)
    for code in codes:
        # 1005 and 1006 cannot be sent but are reported for clients that close without a
        # code or drop the connection, so they may be caught.
        if type(code) is not int or not 1000 <= code <= 4999:
            raise ValueError(
                f"caught_close_codes contains {code!r}: close codes are ints from 1000 to 4999"
            )
    return CloseCodes(codes)


def _check_value_type(config: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, str) and value in VALUE_TYPES:
        return
    if isinstance(value, str) or not is_typed(value):
        allowed = ", ".join(repr(name) for name in VALUE_TYPES)
        close = (
            difflib.get_close_matches(value, VALUE_TYPES, n=1) if isinstance(value, str) else []
        )
        raise ValueError(
            f"{attribute.name} must be one of {allowed}, or typed messages (an attrs class, "
            f"a union of them, TypedMessages(...)); not {value!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    try:
        # Validators run once every field is set, so the converter is known here.
        check_typed(value, config.converter)
    except TypeError as exc:
        raise TypeError(f"{attribute.name}: {exc}") from None


def _check_converter(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, cattrs.BaseConverter):
        raise TypeError(f"{attribute.name} must be a cattrs converter or None, not {value!r}")


def _check_sendable_code(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    try:
        validate_close_code(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{attribute.name}: {exc}") from None


def _check_reason(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        validate_close_reason(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{attribute.name}: {exc}") from None


def _positive_number(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number of seconds above 0, not {value!r}")


def _optional_positive_number(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _positive_number(_, attribute, value)


def _positive_int(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an int of at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class WebSocketConfig:
    """How a :class:`~trio_bocaws.WebSocket` behaves. Immutable; change with
    :func:`attrs.evolve`.

    Bocadillo's ``value_type`` is no field of its own (it sets two): use
    ``WebSocketConfig().with_options(value_type="json")``, or
    ``WebSocketConfig.from_mapping({"value_type": "json"})``.

    Attributes:
        auto_accept: Accept the handshake on the first ``send*``/``receive*`` (or on entering
            ``async with``) instead of requiring :meth:`~trio_bocaws.WebSocket.accept`.
        receive_type: What :meth:`~trio_bocaws.WebSocket.receive` returns: ``"text"``,
            ``"bytes"``, ``"json"`` or ``"event"`` (the raw ASGI event); or typed messages:
            an attrs class, a union of attrs classes with a tag field, or
            :class:`~trio_bocaws.TypedMessages` (validated instances).
        send_type: What :meth:`~trio_bocaws.WebSocket.send` takes, from the same choices.
        converter: The cattrs converter for typed messages; ``None`` for
            :func:`~trio_bocaws.message_converter`'s.
        caught_close_codes: Client close codes that end ``async with`` and ``async for``
            quietly. Anything :class:`CloseCodes` accepts: a tuple of ints, the builtin
            :func:`all`, or ``()`` for none.
        close_timeout: Seconds that closing may take when ``async with`` exits (on error or
            cancellation the close runs shielded from cancellation, within this bound).
        cancelled_close_code: The close code sent when the body of ``async with`` is
            cancelled, by a timeout say. 1001 means "going away".
        cancelled_close_reason: The reason sent with it.
        shutdown_close_code: The close code sent to every open connection when the server
            starts to shut down (under :func:`trio_bocaws.serve`, or hypercorn's trio
            worker with :mod:`trio_bocaws.hypercorn_fixes`).
        shutdown_close_reason: The reason sent with it.
        max_buffered_messages: How many messages may wait for the next ``receive`` while the
            handler is busy elsewhere. Past this, the server stops reading from the client
            (backpressure); nothing is dropped.
        idle_timeout: Seconds without a message from the client after which the block is
            cancelled and the connection closed with 1001 ("idle"), or ``None`` (the
            default) for no limit: a client that only listens is not idle to its user.
            Only inside ``async with ws`` (every :class:`~trio_bocaws.App` view).
    """

    auto_accept: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    receive_type: ValueType | Any = attrs.field(default="text", validator=_check_value_type)
    send_type: ValueType | Any = attrs.field(default="text", validator=_check_value_type)
    converter: cattrs.BaseConverter | None = attrs.field(default=None, validator=_check_converter)
    caught_close_codes: CloseCodes = attrs.field(
        default=_DEFAULT_CAUGHT, converter=_to_close_codes
    )
    close_timeout: float = attrs.field(default=5.0, validator=_positive_number)
    cancelled_close_code: int = attrs.field(default=1001, validator=_check_sendable_code)
    cancelled_close_reason: str = attrs.field(default="", validator=_check_reason)
    shutdown_close_code: int = attrs.field(default=1001, validator=_check_sendable_code)
    shutdown_close_reason: str = attrs.field(
        default="server shutting down", validator=_check_reason
    )
    max_buffered_messages: int = attrs.field(default=16, validator=_positive_int)
    idle_timeout: float | None = attrs.field(default=None, validator=_optional_positive_number)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> WebSocketConfig:
        """Build a config from a mapping such as a parsed settings file.

        ``value_type`` is accepted as a shorthand that sets both ``receive_type`` and
        ``send_type``. Unknown keys are an error that lists them.
        """
        options = dict(mapping)
        value_type = options.pop("value_type", None)
        if value_type is not None:
            options["receive_type"] = options["send_type"] = value_type
        known = {field.name for field in attrs.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unknown WebSocket option(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known | {'value_type'}))})"
            )
        return cls(**options)

    def with_options(
        self,
        *,
        auto_accept: bool | None = None,
        value_type: Any = None,
        receive_type: Any = None,
        send_type: Any = None,
        caught_close_codes: object = None,
        idle_timeout: float | None = None,
    ) -> WebSocketConfig:
        """Return a copy with Bocadillo's constructor keywords applied.

        ``None`` leaves an option as it is; ``value_type`` overrides ``receive_type`` and
        ``send_type``. This is how ``WebSocket(...)`` and routes map their keywords onto a
        config.
        """
        changes: dict[str, Any] = {}
        if auto_accept is not None:
            changes["auto_accept"] = auto_accept
        if value_type is not None:
            receive_type = send_type = value_type
        if receive_type is not None:
            changes["receive_type"] = receive_type
        if send_type is not None:
            changes["send_type"] = send_type
        if caught_close_codes is not None:
            changes["caught_close_codes"] = caught_close_codes
        if idle_timeout is not None:
            changes["idle_timeout"] = idle_timeout
        if not changes:
            return self
        try:
            return attrs.evolve(self, **changes)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            if value_type is None or not message.startswith("receive_type"):
                raise
            # The user wrote value_type: name it, not the field it sets.
            raise type(exc)("value_type" + message[len("receive_type") :]) from None
