"""AsyncAPI documents, validated against the official AsyncAPI 3.0 JSON Schema.

The schema comes from the npm package @asyncapi/specs, pinned in tests/asyncapi/package.json
and installed by ``npm ci --prefix tests/asyncapi`` (.ci/run does it).
"""

from __future__ import annotations

import datetime
import enum
import functools
import json
import keyword
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import cattrs.strategies
import jsonschema
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import typed_chat
from trio_bocaws import App, AsyncAPIConfig, TypedMessages, WebSocket, message_converter
from trio_bocaws._cli import main
from trio_bocaws._typed import codec_for

from .components import require
from .conftest import Server
from .raw_client import http_get, http_request
from .test_typed_codec import Circle, Square

Serve = Callable[..., Awaitable[Server]]
ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests/asyncapi/node_modules/@asyncapi/specs/schemas/3.0.0.json"
TIMEOUT = 5


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


@pytest.fixture
def asyncapi_schema() -> jsonschema.protocols.Validator:
    require(
        SCHEMA.is_file(),
        "the AsyncAPI 3.0 JSON Schema (npm package @asyncapi/specs)",
        "run `npm ci --prefix tests/asyncapi`",
    )
    return _validator()


def assert_valid(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> None:
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert problems == []


def payload_validator(document: dict[str, Any], schema_name: str) -> jsonschema.Draft7Validator:
    """A validator for one payload schema, its references resolved inside the document."""
    return jsonschema.Draft7Validator(
        {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    )


def test_the_validator_is_live(asyncapi_schema: jsonschema.protocols.Validator) -> None:
    document = typed_chat.app.asyncapi(title="Typed chat", version="1.0.0")
    document["operations"]["Chat.receive"]["action"] = "listen"
    del document["channels"]["Chat"]["address"]
    document["channels"]["Chat"]["address"] = 5
    problems = list(asyncapi_schema.iter_errors(document))
    assert len(problems) >= 2


def test_the_typed_chat_document(asyncapi_schema: jsonschema.protocols.Validator) -> None:
    document = typed_chat.app.asyncapi(title="Typed chat", version="1.0.0")
    assert_valid(asyncapi_schema, document)
    assert document["info"] == {"title": "Typed chat", "version": "1.0.0"}
    channel = document["channels"]["Chat"]
    assert channel["address"] == "/chat/{room}"
    assert channel["parameters"] == {"room": {"description": "path parameter (str)"}}
    assert channel["description"].startswith("A chat room: join with a name")
    assert set(channel["messages"]) == {"Join", "Say", "Leave", "Said", "Problem"}
    assert [code["code"] for code in channel["x-close-codes"]] == [1000, 1001, 1007, 1011, 4000]
    receive = document["operations"]["Chat.receive"]
    assert receive["action"] == "receive"
    assert receive["messages"] == [
        {"$ref": "#/channels/Chat/messages/Join"},
        {"$ref": "#/channels/Chat/messages/Say"},
        {"$ref": "#/channels/Chat/messages/Leave"},
    ]
    assert document["operations"]["Chat.send"]["action"] == "send"
    schemas = document["components"]["schemas"]
    assert schemas["Join"] == {
        "type": "object",
        "title": "Join",
        "description": "Enter the room under a name.",
        "properties": {"type": {"const": "join"}, "user": {"type": "string"}},
        "required": ["type", "user"],
    }
    assert schemas["Said"]["properties"]["at"] == {"type": "string", "format": "date-time"}
    assert schemas["Said"]["properties"]["user"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
    }
    assert schemas["Said"]["required"] == ["type", "text", "at"]
    assert schemas["Problem"]["properties"]["errors"] == {
        "type": "array",
        "items": {"type": "string"},
    }
    message = document["components"]["messages"]["Say"]
    assert message["contentType"] == "application/json"
    assert message["payload"] == {"$ref": "#/components/schemas/Say"}


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Drawing:
    """A drawing of shapes."""

    type: Literal["drawing"]
    shapes: list[Circle | Square]
    colour: Colour = Colour.RED
    layers: dict[str, int] = attrs.field(factory=dict)
    title: str | None = None
    created: datetime.date | None = None


def test_parameters_nested_classes_unions_enums_and_msgpack(
    asyncapi_schema: jsonschema.protocols.Validator,
) -> None:
    app = App()

    @app.websocket_route("/boards/{board:int}/draw", value_type=Drawing)
    async def draw(
        ws: WebSocket, board: int, user: str, zoom: float = 1.0, *, debug: bool = False
    ) -> None:
        """Draw on a board."""

    @app.websocket_route("/fast", value_type=TypedMessages(Drawing, encoding="msgpack"))
    async def fast(ws: WebSocket) -> None:
        pass

    @app.websocket_route("/plain", receive_type="bytes", send_type="json")
    async def plain(ws: WebSocket, since: int | None = None) -> None:
        pass

    document = app.asyncapi(title="Boards", version="2", description="Shared boards.")
    assert_valid(asyncapi_schema, document)
    channel = document["channels"]["draw"]
    assert channel["address"] == "/boards/{board}/draw"
    assert channel["parameters"] == {"board": {"description": "path parameter (int)"}}
    assert channel["bindings"]["ws"]["query"] == {
        "type": "object",
        "properties": {
            "user": {"type": "string"},
            "zoom": {"type": "number", "default": 1.0},
            "debug": {"type": "boolean", "default": False},
        },
        "required": ["user"],
    }
    schemas = document["components"]["schemas"]
    drawing = schemas["Drawing"]
    assert drawing["description"] == "A drawing of shapes."
    assert drawing["required"] == ["type", "shapes"]
    assert drawing["properties"]["shapes"] == {
        "type": "array",
        "items": {
            "oneOf": [
                {"$ref": "#/components/schemas/Circle"},
                {"$ref": "#/components/schemas/Square"},
            ],
            "discriminator": "kind",
        },
    }
    assert drawing["properties"]["colour"] == {
        "enum": ["red", "blue"],
        "type": "string",
        "default": "red",
    }
    assert drawing["properties"]["layers"] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }
    assert schemas["Circle"]["required"] == ["kind", "radius"]
    messages = document["components"]["messages"]
    assert messages["Drawing.msgpack"]["contentType"] == "application/msgpack"
    assert messages["Drawing"]["contentType"] == "application/json"
    assert document["operations"]["plain.receive"]["messages"] == [
        {"$ref": "#/channels/plain/messages/Bytes"}
    ]
    assert messages["JSON"]["payload"] == {}
    assert document["channels"]["plain"]["bindings"]["ws"]["query"] == {
        "type": "object",
        "properties": {"since": {"type": "integer"}},
    }
    # A message the server would take fits its schema, and one it refuses does not.
    payloads = payload_validator(document, "Drawing")
    good = {"type": "drawing", "shapes": [{"kind": "circle", "radius": 2}], "colour": "blue"}
    assert list(payloads.iter_errors(good)) == []
    assert list(payloads.iter_errors({"type": "drawing", "shapes": [{"kind": "blob"}]}))


# -- Hypothesis: generated classes ---------------------------------------------------------

LEAVES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (str, st.text(max_size=5)),
    (int, st.integers(-(2**40), 2**40)),
    (float, st.floats(allow_nan=False, allow_infinity=False)),
    (bool, st.booleans()),
    (datetime.datetime, st.datetimes(timezones=st.just(datetime.timezone.utc))),
    (Colour, st.sampled_from(Colour)),
]


@st.composite
def field_types(draw: st.DrawFn, depth: int = 0) -> tuple[Any, st.SearchStrategy[Any]]:
    choice = draw(st.integers(0, 6 if depth < 2 else 0))
    if choice <= 1:
        leaf: tuple[Any, st.SearchStrategy[Any]] = draw(st.sampled_from(LEAVES))
        return leaf
    inner, values = draw(field_types(depth + 1))
    if choice == 2:
        return list[inner], st.lists(values, max_size=3)  # type: ignore[valid-type]
    if choice == 3:
        return dict[str, inner], st.dictionaries(st.text(max_size=3), values, max_size=3)  # type: ignore[valid-type]
    if choice == 4:
        return inner | None, st.none() | values
    if choice == 5:
        cls = draw(classes(depth + 1))
        return cls, instances(cls)
    # A tagged union inside a class: a oneOf keyed by the tag.
    first, second = draw(classes(depth + 1, tag="a")), draw(classes(depth + 1, tag="b"))
    union: Any = first | second
    return union, instances(first) | instances(second)


_counter = iter(range(10**9))


@st.composite
def classes(draw: st.DrawFn, depth: int = 0, tag: str | None = None) -> type:
    names = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), unique=True, max_size=4)
    )
    fields: dict[str, Any] = {}
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    if tag is not None:
        tag_type: Any = Literal[tag]
        fields["type"] = attrs.field(type=tag_type)
        strategies["type"] = st.just(tag)
    for name in names:
        if name == "type" or keyword.iskeyword(name):
            continue
        annotation, values = draw(field_types(depth))
        fields[name] = attrs.field(type=annotation)
        strategies[name] = values
    cls = attrs.make_class(f"Generated{next(_counter)}", fields, frozen=True)
    cls.strategies = strategies  # type: ignore[attr-defined]
    return cls


def instances(cls: Any) -> st.SearchStrategy[Any]:
    return st.builds(cls, **cls.strategies)


@st.composite
def unions(draw: st.DrawFn) -> tuple[Any, list[type]]:
    count = draw(st.integers(1, 3))
    members = [draw(classes(tag=f"t{index}")) for index in range(count)]
    union: Any = members[0]
    for member in members[1:]:
        union = union | member
    return union, members


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_generated_classes_give_valid_documents_and_schemas_their_messages_fit(
    asyncapi_schema: jsonschema.protocols.Validator, data: st.DataObject
) -> None:
    union, members = data.draw(unions())
    app = App()

    async def view(ws: WebSocket) -> None:
        pass  # pragma: no cover

    app.add_websocket_route("/generated", view, value_type=union)
    document = app.asyncapi(title="Generated", version="0")
    assert_valid(asyncapi_schema, document)
    converter = message_converter()
    for member in members:
        instance = data.draw(instances(member))
        raw = json.loads(json.dumps(converter.unstructure(instance)))
        problems = list(payload_validator(document, member.__name__).iter_errors(raw))
        assert problems == [], raw
        # And the codec reads back what it wrote.
        codec = codec_for(union)
        assert codec.decode({"text": codec.encode(instance)["text"]}) == instance


# -- Served over HTTP, and printed by the command line ------------------------------------


async def test_the_document_is_served_over_http(serve: Serve) -> None:
    server = await serve(typed_chat.app)
    with trio.fail_after(TIMEOUT):
        status, body = await http_get(server.url, "/asyncapi.json")
        assert status == 200
        assert json.loads(body) == typed_chat.app.asyncapi(title="Typed chat", version="1.0.0")
        status, _ = await http_get(server.url, "/elsewhere")
        assert status == 404


def test_asyncapi_config_checks_its_path() -> None:
    with pytest.raises(ValueError, match="path must be a str starting with '/'"):
        AsyncAPIConfig(title="t", version="1", path="asyncapi.json")


def test_the_command_line_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asyncapi", "examples.typed_chat:app", "--title", "Typed chat"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == typed_chat.app.asyncapi(title="Typed chat", version="1.0.0")
    assert main(["asyncapi", "examples.typed_chat:tell_everyone"]) == 2
    assert "is not a trio_bocaws App" in capsys.readouterr().err


def test_python_m_trio_bocaws_asyncapi() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_bocaws", "asyncapi", "examples.typed_chat:app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["info"]["title"] == "examples.typed_chat:app"


def test_the_document_shown_in_the_docs_is_current() -> None:
    """docs/typed-messages.md shows examples/typed_chat_asyncapi.json; regenerate it with
    ``python -m trio_bocaws asyncapi examples.typed_chat:app --title "Typed chat"``."""
    shown = json.loads((ROOT / "examples/typed_chat_asyncapi.json").read_text(encoding="utf-8"))
    assert shown == typed_chat.app.asyncapi(title="Typed chat", version="1.0.0")


NOT_JSON = object()


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Everything:
    """Everything(a=...) is attrs's generated text, not a description: it is left out."""

    anything: Any
    pair: tuple[int, str]
    many: tuple[float, ...]
    unique: frozenset[str]
    sequence: Sequence[int]
    bare_list: list  # type: ignore[type-arg]
    bare_dict: dict  # type: ignore[type-arg]
    level: Level
    modes: Literal["a", "b"]
    number: int | str
    maybe_number: int | str | None
    unknown: uuid.UUID
    derived: int = attrs.field(init=False, default=0)
    stamp: datetime.datetime = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    opaque: Any = NOT_JSON


def test_every_kind_of_field_has_a_schema(asyncapi_schema: jsonschema.protocols.Validator) -> None:
    converter = message_converter()
    # cattrs takes unions of plain types only when told how.
    cattrs.strategies.configure_union_passthrough(int | str, converter)
    converter.register_structure_hook(uuid.UUID, lambda value, _: uuid.UUID(value))
    app = App(converter=converter)

    @app.websocket_route("/everything", receive_type=Everything, send_type="event")
    async def everything(ws: WebSocket, **params: Any) -> None:
        pass

    @app.websocket_route("/{name}/copy", receive_type=Everything, send_type="text")
    async def everything_2(ws: WebSocket, name: str, flag) -> None:  # type: ignore[no-untyped-def]
        pass

    servers = {"local": {"host": "127.0.0.1:8000", "protocol": "ws"}}
    document = app.asyncapi(title="All", version="1", servers=servers)
    assert_valid(asyncapi_schema, document)
    assert document["servers"] == servers
    # The second view's name would repeat the first's channel key: it gets another.
    assert set(document["channels"]) == {"everything", "everything_2"}
    assert "bindings" not in document["channels"]["everything"]
    assert document["channels"]["everything_2"]["bindings"]["ws"]["query"] == {
        "type": "object",
        "properties": {"flag": {"type": "string"}},
        "required": ["flag"],
    }
    schema = document["components"]["schemas"]["Everything"]
    assert "description" not in schema
    properties = schema["properties"]
    assert "derived" not in properties
    assert properties["anything"] == {}
    assert properties["pair"] == {
        "type": "array",
        "items": [{"type": "integer"}, {"type": "string"}],
        "minItems": 2,
        "maxItems": 2,
    }
    assert properties["many"] == {"type": "array", "items": {"type": "number"}}
    assert properties["unique"] == {
        "type": "array",
        "items": {"type": "string"},
        "uniqueItems": True,
    }
    assert properties["sequence"] == {"type": "array", "items": {"type": "integer"}}
    assert properties["bare_list"] == {"type": "array"}
    assert properties["bare_dict"] == {"type": "object"}
    assert properties["level"] == {"enum": [1, 2], "type": "integer"}
    assert properties["modes"] == {"enum": ["a", "b"], "type": "string"}
    assert properties["number"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert properties["maybe_number"] == {
        "anyOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"type": "null"}]
    }
    assert properties["unknown"] == {}
    assert properties["stamp"]["default"] == "2024-01-01T00:00:00+00:00"
    assert properties["opaque"] == {}  # its default is not JSON
    assert document["components"]["messages"]["Any"]["payload"] == {}


async def test_head_and_other_methods_on_the_document_path(serve: Serve) -> None:
    app = App(asyncapi=AsyncAPIConfig(title="t", version="1", path="/spec"))
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        for method, status, empty in [("HEAD", 200, True), ("POST", 404, False)]:
            answered, _, body = await http_request(
                server.url, "/spec", method=method, headers="Content-Length: 0\r\n"
            )
            assert answered == status
            assert (body == b"") is empty
