"""The typed message codec without the network: every kind of field, every kind of
problem and how it is reported, and what configuration refuses."""

from __future__ import annotations

import datetime
import sys
import uuid
from typing import Any, Literal

import attrs
import cattrs
import msgpack
import pytest

from trio_bocaws import (
    App,
    MessageValidationError,
    TypedMessages,
    WebSocket,
    WebSocketConfig,
    message_converter,
)
from trio_bocaws._typed import close_reason, codec_for


@attrs.frozen
class Circle:
    kind: Literal["circle"]
    radius: float


@attrs.frozen
class Square:
    kind: Literal["square"]
    side: float = attrs.field(validator=attrs.validators.gt(0))


@attrs.frozen
class Shapes:
    type: Literal["shapes"]
    main: Circle | Square
    extra: Circle | Square | None = None
    visible: bool = True
    day: datetime.date | None = None
    corners: tuple[int, int] = (0, 0)
    names: frozenset[str] = frozenset()


def problems(value_type: Any, event: dict[str, Any], **options: Any) -> list[tuple[str, str]]:
    with pytest.raises(MessageValidationError) as info:
        codec_for(value_type, **options).decode(event)
    return info.value.errors


def text(document: str) -> dict[str, Any]:
    return {"type": "websocket.receive", "text": document}


def test_a_round_trip_of_every_kind_of_field() -> None:
    codec = codec_for(Shapes)
    shapes = Shapes(
        "shapes",
        Square("square", 2.0),
        Circle("circle", 1.0),
        False,
        datetime.date(2024, 5, 6),
        (1, 2),
        frozenset({"a"}),
    )
    event = codec.encode(shapes)
    assert event == {
        "type": "websocket.send",
        "text": '{"type":"shapes","main":{"kind":"square","side":2.0},'
        '"extra":{"kind":"circle","radius":1.0},"visible":false,"day":"2024-05-06",'
        '"corners":[1,2],"names":["a"]}',
    }
    assert codec.decode(text(event["text"])) == shapes
    # JSON may come in a binary frame, as UTF-8.
    assert codec.decode({"bytes": event["text"].encode()}) == shapes


def test_nested_tagged_unions_and_validators() -> None:
    base = '{"type": "shapes", "main": '
    assert problems(Shapes, text(base + '{"kind": "hexagon"}}')) == [
        ("$.main.kind", 'expected one of "circle", "square", got "hexagon"')
    ]
    assert problems(Shapes, text(base + '{"radius": 1}}')) == [
        ("$.main.kind", 'required field missing (one of "circle", "square")')
    ]
    assert problems(Shapes, text(base + '{"kind": "circle", "radius": 1}, "extra": 3}')) == [
        ("$.extra", "expected an object (Circle) or an object (Square) or null, got 3")
    ]
    assert problems(Shapes, text(base + '{"kind": "square", "side": -1}}')) == [
        ("$.main", "'side' must be > 0: -1.0")
    ]
    assert problems(Shapes, text(base + '{"kind": "square", "side": "x"}}')) == [
        ("$.main.side", 'expected float, got "x"')
    ]
    assert problems(Square, text('{"kind": "square", "side": -1}')) == [
        ("$", "'side' must be > 0: -1.0")
    ]


def test_each_json_type_is_taken_strictly() -> None:
    base = '{"type": "shapes", "main": {"kind": "circle", "radius": 1}'
    assert problems(Shapes, text(base + ', "visible": 1}')) == [
        ("$.visible", "expected bool, got 1")
    ]
    assert problems(Shapes, text(base + ', "day": 20240506}')) == [
        ("$.day", "expected an ISO 8601 date or null, got 20240506")
    ]
    assert problems(Shapes, text(base + ', "corners": "ab"}')) == [
        ("$.corners", 'expected a list, got "ab"')
    ]
    assert problems(Circle, text('{"kind": "circle", "radius": true}')) == [
        ("$.radius", "expected float, got true")
    ]


def test_what_is_not_json_or_not_msgpack() -> None:
    assert problems(Circle, {"bytes": b"\xff\xfe"}) == [
        ("$", "expected JSON, got a binary message that is not UTF-8")
    ]
    assert problems(Circle, text('{"kind": "circle", "radius": NaN}')) == [
        ("$", "invalid JSON: NaN is not valid JSON")
    ]
    binary = TypedMessages(Circle, encoding="msgpack")
    assert problems(binary, {"bytes": b"\xc1"})[0][1].startswith("invalid MessagePack: ")
    assert codec_for(binary).decode({"bytes": msgpack.packb({"kind": "circle", "radius": 2})}) == (
        Circle("circle", 2.0)
    )


def test_a_converter_that_forbids_extra_keys_names_them() -> None:
    converter = cattrs.Converter(forbid_extra_keys=True)
    assert problems(
        Circle, text('{"kind": "circle", "radius": 1, "colour": "red"}'), converter=converter
    ) == [("$", "unexpected field(s): colour")]


def test_an_error_from_a_hook_of_its_own_is_reported_in_its_words() -> None:
    converter = message_converter()

    def refuse(value: Any, _: Any) -> float:
        raise LookupError("no radius today")

    converter.register_structure_hook(float, refuse)
    assert problems(Circle, text('{"kind": "circle", "radius": 1}'), converter=converter) == [
        ("$.radius", "no radius today")
    ]


def test_subclasses_may_be_sent_and_others_are_refused() -> None:
    @attrs.frozen
    class BigCircle(Circle):
        pass

    codec = codec_for(Circle | Square)
    assert codec.encode(BigCircle("circle", 9.0))["text"] == '{"kind":"circle","radius":9.0}'
    with pytest.raises(TypeError, match="takes Circle or Square, not Shapes"):
        codec.encode(Shapes("shapes", Circle("circle", 1.0)))


def test_codecs_are_shared() -> None:
    assert codec_for(Circle | Square) is codec_for(Circle | Square)
    assert codec_for(Circle) is not codec_for(Circle, cattrs.Converter())


def test_long_values_and_reasons_are_cut() -> None:
    errors = problems(Circle, text('{"kind": "circle", "radius": "' + "9" * 100 + '"}'))
    assert errors == [("$.radius", 'expected float, got "' + "9" * 36 + "...")]
    long = MessageValidationError([("$." + "a" * 200, "bad")])
    reason = close_reason(long)
    assert len(reason.encode()) == 123 and reason.endswith("...")
    assert close_reason(MessageValidationError([])) == "invalid message: $: invalid message"


def test_what_typed_messages_refuse() -> None:
    with pytest.raises(TypeError, match="TypedMessages takes an attrs class"):
        TypedMessages(dict)
    with pytest.raises(TypeError, match="TypedMessages takes an attrs class"):
        TypedMessages(TypedMessages(Circle))

    @attrs.frozen
    class OtherCircle:
        kind: Literal["circle"]

    with pytest.raises(TypeError, match="need a tag field"):
        TypedMessages(Circle | OtherCircle)  # the same tag value twice
    with pytest.raises(TypeError, match="converter must be a cattrs converter"):
        TypedMessages(Circle, converter="json")  # type: ignore[arg-type]


def test_msgpack_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)
    with pytest.raises(ImportError, match=r"pip install trio-bocaws\[msgpack\]"):
        TypedMessages(Circle, encoding="msgpack")


def test_a_field_the_converter_cannot_read_is_refused_when_configured() -> None:
    @attrs.frozen
    class Tagged:
        id: uuid.UUID

    with pytest.raises(TypeError, match=r"receive_type: Unsupported type: <class 'uuid.UUID'>"):
        WebSocketConfig(receive_type=Tagged)
    converter = message_converter()
    converter.register_structure_hook(uuid.UUID, lambda value, _: uuid.UUID(value))
    app = App(converter=converter)

    async def view(ws: WebSocket) -> None:
        pass  # pragma: no cover

    route = app.add_websocket_route("/", view, value_type=Tagged)
    assert route.config.converter is converter
