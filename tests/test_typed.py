"""Typed messages on a real hypercorn server, with a trio-websocket client: attrs classes in
and out, validation errors with their paths, 1007 for an escaped one, MessagePack."""

from __future__ import annotations

import datetime
import enum
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import attrs
import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed

from trio_bocaws import (
    App,
    Broadcast,
    MessageValidationError,
    TypedMessages,
    WebSocket,
    WebSocketConfig,
    message_converter,
)
from trio_bocaws._typed import codec_for

from .conftest import Server, close_of, connect, websocket_app

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 5


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


@attrs.frozen
class Item:
    name: str
    price: float
    size: Size = Size.SMALL


@attrs.frozen
class Join:
    type: Literal["join"]
    user: str


@attrs.frozen
class Say:
    type: Literal["say"]
    text: str
    items: list[Item] = attrs.field(factory=list)
    tags: dict[str, int] = attrs.field(factory=dict)
    at: datetime.datetime | None = None
    reply_to: int | None = None


@attrs.frozen
class Leave:
    type: Literal["leave"]


@attrs.frozen
class Echo:
    type: Literal["echo"]
    said: str
    count: int


Incoming = Join | Say | Leave


def echo_app(**route_options: object) -> App:
    """Answers each Say with an Echo; a Join with an Echo of the user; Leave closes."""
    app = App()

    @app.websocket_route("/chat", **route_options)  # type: ignore[arg-type]
    async def chat(ws: WebSocket) -> None:
        count = 0
        async for message in ws:
            count += 1
            if isinstance(message, Join):
                await ws.send(Echo("echo", f"hello {message.user}", count))
            elif isinstance(message, Say):
                total = sum(item.price for item in message.items)
                when = message.at.isoformat() if message.at else "-"
                sizes = ",".join(item.size.value for item in message.items)
                said = f"{message.text}|{total:g}|{sizes}|{when}|{message.reply_to}|{message.tags}"
                await ws.send(Echo("echo", said, count))
            else:
                return

    return app


async def test_typed_round_trip_both_ways_with_a_tagged_union(serve: Serve) -> None:
    server = await serve(echo_app(receive_type=Incoming, send_type=Echo))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat") as client:
            await client.send_message(json.dumps({"type": "join", "user": "ann"}))
            assert json.loads(await client.get_message()) == {
                "type": "echo",
                "said": "hello ann",
                "count": 1,
            }
            say = {
                "type": "say",
                "text": "hi",
                "items": [{"name": "a", "price": 1.5}, {"name": "b", "price": 2, "size": "large"}],
                "tags": {"x": 1},
                "at": "2024-05-06T07:08:09+00:00",
                "reply_to": 3,
            }
            await client.send_message(json.dumps(say))
            echoed = json.loads(await client.get_message())
            assert echoed["said"] == "hi|3.5|small,large|2024-05-06T07:08:09+00:00|3|{'x': 1}"
            # Optional and defaulted fields may be left out.
            await client.send_message(json.dumps({"type": "say", "text": "bare"}))
            assert json.loads(await client.get_message())["said"] == "bare|0||-|None|{}"
            await client.send_message(json.dumps({"type": "leave"}))
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
            assert close_of(closed) == (1000, "")


# Each kind of problem, with the path and message the client is told.
INVALID = [
    ('{"type": "say"', "$", "invalid JSON: Expecting ',' delimiter: line 1 column 15 (char 14)"),
    ("[1, 2]", "$", "expected an object (Join or Say or Leave), got [1, 2]"),
    ('{"user": "ann"}', "$.type", 'required field missing (one of "join", "say", "leave")'),
    ('{"type": "shout"}', "$.type", 'expected one of "join", "say", "leave", got "shout"'),
    ('{"type": "join"}', "$.user", "required field missing"),
    ('{"type": "join", "user": 5}', "$.user", "expected str, got 5"),
    (
        '{"type": "say", "text": "t", "items": [{"name": "a", "price": 1}, '
        '{"name": "b", "price": 2}, {"name": "c", "price": "abc"}]}',
        "$.items[2].price",
        'expected float, got "abc"',
    ),
    (
        '{"type": "say", "text": "t", "items": [{"name": "a", "price": 1, "size": "huge"}]}',
        "$.items[0].size",
        'expected one of "small", "large", got "huge"',
    ),
    ('{"type": "say", "text": "t", "items": 3}', "$.items", "expected a list, got 3"),
    ('{"type": "say", "text": "t", "tags": {"k": "v"}}', '$.tags["k"]', 'expected int, got "v"'),
    (
        '{"type": "say", "text": "t", "at": "yesterday"}',
        "$.at",
        'expected an ISO 8601 date and time or null, got "yesterday"',
    ),
    (
        '{"type": "say", "text": "t", "reply_to": "3"}',
        "$.reply_to",
        'expected int or null, got "3"',
    ),
]


@pytest.mark.parametrize(("sent", "path", "problem"), INVALID)
async def test_each_validation_error_names_its_path_and_the_connection_goes_on(
    serve: Serve, sent: str, path: str, problem: str
) -> None:
    app = App()
    seen: list[MessageValidationError] = []

    @app.websocket_route("/chat", value_type=Incoming)
    async def chat(ws: WebSocket) -> None:
        while True:
            try:
                message = await ws.receive()
            except MessageValidationError as error:
                seen.append(error)
                await ws.send_json({"errors": [list(pair) for pair in error.errors]})
                continue
            await ws.send_json({"ok": type(message).__name__})

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat") as client:
            await client.send_message(sent)
            answer = json.loads(await client.get_message())
            assert answer["errors"][0] == [path, problem]
            # Caught, the error leaves the connection usable: the next message is read.
            await client.send_message('{"type": "join", "user": "ann"}')
            assert json.loads(await client.get_message()) == {"ok": "Join"}
    assert seen[0].raw is not None


async def test_every_problem_of_a_message_is_listed() -> None:
    codec = codec_for(Incoming)
    raw = {"type": "say", "text": 1, "items": [{"price": "x"}], "at": 5}
    with pytest.raises(MessageValidationError) as info:
        codec.decode({"type": "websocket.receive", "text": json.dumps(raw)})
    assert info.value.errors == [
        ("$.text", "expected str, got 1"),
        ("$.items[0].name", "required field missing"),
        ("$.items[0].price", 'expected float, got "x"'),
        ("$.at", "expected an ISO 8601 date and time or null, got 5"),
    ]
    assert info.value.raw == raw
    assert str(info.value).startswith("invalid message: $.text: expected str, got 1; ")


async def test_an_escaped_validation_error_closes_with_1007_and_logs_one_warning(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.websocket_route("/chat", value_type=Incoming)
    async def chat(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="trio_bocaws"):
        async with connect(server.url + "/chat") as client:
            await client.send_message('{"type": "join", "user": "ann"}')
            assert json.loads(await client.get_message()) == {"type": "join", "user": "ann"}
            await client.send_message('{"type": "join", "user": ["ann"]}')
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        assert close_of(closed) == (1007, 'invalid message: $.user: expected str, got ["ann"]')
        # The server goes on serving.
        async with connect(server.url + "/chat") as client:
            await client.send_message('{"type": "leave"}')
            assert json.loads(await client.get_message()) == {"type": "leave"}
    records = [
        r for r in caplog.records if r.name == "trio_bocaws" and r.levelno >= logging.WARNING
    ]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING and records[0].exc_info is None
    assert records[0].getMessage() == (
        "WebSocket view test_an_escaped_validation_error_closes_with_1007_and_logs_one_warning."
        "<locals>.chat for '/chat': client sent invalid message: $.user: expected str, "
        'got ["ann"]'
    )


async def test_a_long_first_problem_is_cut_to_fit_a_close_reason(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/chat", value_type=Incoming)
    async def chat(ws: WebSocket) -> None:
        await ws.receive()

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat") as client:
            await client.send_message(json.dumps({"type": "é" * 200}))
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    code, reason = close_of(closed)
    assert code == 1007
    assert reason.startswith('invalid message: $.type: expected one of "join", "say"')
    assert len(reason.encode()) <= 123 and reason.endswith("...")


async def test_sending_the_wrong_type_is_refused_before_anything_is_sent(serve: Serve) -> None:
    app = App()
    refused: list[str] = []

    @app.websocket_route("/chat", send_type=Echo)
    async def chat(ws: WebSocket) -> None:
        for wrong in (Join("join", "x"), {"type": "echo", "said": "s", "count": 1}, "text"):
            with pytest.raises(TypeError) as info:
                await ws.send(wrong)
            refused.append(str(info.value))
        await ws.send(Echo("echo", "only this", 1))

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat") as client:
            # The first message the client gets is the valid one: nothing else went out.
            assert json.loads(await client.get_message()) == {
                "type": "echo",
                "said": "only this",
                "count": 1,
            }
    assert refused == [
        "send() on this WebSocket takes Echo, not Join",
        "send() on this WebSocket takes Echo, not dict",
        "send() on this WebSocket takes Echo, not str",
    ]


async def test_a_msgpack_route_sends_and_receives_binary_frames(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/game", value_type=TypedMessages(Incoming | Echo, encoding="msgpack"))
    async def game(ws: WebSocket) -> None:
        async for message in ws:
            if isinstance(message, Say):
                await ws.send(Echo("echo", message.text.upper(), len(message.items)))
            else:
                await ws.send(message)

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/game") as client:
            say = {"type": "say", "text": "go", "items": [{"name": "a", "price": 1.0}]}
            await client.send_message(msgpack.packb(say))
            answer = await client.get_message()
            assert isinstance(answer, bytes)
            assert msgpack.unpackb(answer) == {"type": "echo", "said": "GO", "count": 1}
            # A text frame on a MessagePack route does not fit it: 1007.
            await client.send_message(json.dumps(say))
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (
        1007,
        "invalid message: $: expected a binary MessagePack message, got a text message",
    )


async def test_the_four_strings_work_as_before_beside_typed_routes(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/json", value_type="json")
    async def plain(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send({"got": message})

    @app.websocket_route("/mixed", receive_type=Join, send_type="text")
    async def mixed(ws: WebSocket) -> None:
        message = await ws.receive()
        await ws.send(f"hello {message.user}")

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/json") as client:
            await client.send_message('{"type": "whatever"}')
            assert json.loads(await client.get_message()) == {"got": {"type": "whatever"}}
        async with connect(server.url + "/mixed") as client:
            await client.send_message('{"type": "join", "user": "bo"}')
            assert await client.get_message() == "hello bo"


async def test_a_replaced_converter_is_used_for_the_apps_routes(serve: Serve) -> None:
    converter = message_converter()
    # This app's clients send prices in cents, as strings.
    converter.register_structure_hook(float, lambda value, _: int(value) / 100)
    app = App(converter=converter)

    @app.websocket_route("/chat", value_type=Incoming)
    async def chat(ws: WebSocket) -> None:
        message = await ws.receive()
        await ws.send(Say("say", "total", items=message.items))

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat") as client:
            await client.send_message(
                json.dumps({"type": "say", "text": "t", "items": [{"name": "a", "price": "250"}]})
            )
            answer = json.loads(await client.get_message())
    assert answer["items"] == [{"name": "a", "price": 2.5, "size": "small"}]


async def test_a_room_sends_a_typed_message_as_its_routes_would(serve: Serve) -> None:
    """``room.send(Say(...))`` reaches every member as the JSON a typed route sends, encoded
    with the App's converter; a value JSON cannot hold is refused before anything is sent."""
    converter = message_converter()
    converter.register_unstructure_hook(float, lambda value: f"{value:.2f}")
    hub = Broadcast()
    app = App(broadcast=hub, converter=converter)
    joined = trio.Event()

    @app.websocket_route("/room", value_type=Incoming)
    async def room(ws: WebSocket) -> None:
        await hub.room("typed").join(ws)
        joined.set()
        await ws.receive()

    server = await serve(app)
    when = datetime.datetime(2026, 11, 30, 9, 0, tzinfo=datetime.timezone.utc)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/room") as client:
            await joined.wait()
            with pytest.raises(TypeError, match="and object is not JSON serializable"):
                await hub.room("typed").send({"not json": object()})
            await hub.room("typed").send(Say("say", "hi", items=[Item("tea", 2.5)], at=when))
            received = json.loads(await client.get_message())
    assert received == {
        "type": "say",
        "text": "hi",
        "items": [{"name": "tea", "price": "2.50", "size": "small"}],
        "tags": {},
        "at": "2026-11-30T09:00:00+00:00",
        "reply_to": None,
    }


async def test_a_room_refuses_what_json_cannot_hold_and_names_it() -> None:
    async with Broadcast() as hub:
        with pytest.raises(TypeError, match=r"Size is not JSON serializable.*attrs class"):
            await hub.room("r").send_json({"size": Size.SMALL})
        with pytest.raises(ValueError, match="not JSON compliant"):
            await hub.room("r").send_json({"price": float("nan")})


def test_configuration_errors_name_the_problem() -> None:
    @attrs.frozen
    class A:
        x: int

    @attrs.frozen
    class B:
        y: int

    with pytest.raises(
        TypeError, match="receive_type: the classes of a union of messages need a tag"
    ):
        WebSocketConfig(receive_type=A | B)
    with pytest.raises(
        ValueError, match="send_type must be one of 'text', 'bytes', 'json', 'event', or typed"
    ):
        WebSocketConfig(send_type=int)
    with pytest.raises(ValueError, match="encoding must be 'json' or 'msgpack'"):
        TypedMessages(A, encoding="xml")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="converter must be a cattrs converter"):
        WebSocketConfig(converter=object())  # type: ignore[arg-type]
    # The four strings, unchanged.
    for name in ("text", "bytes", "json", "event"):
        assert WebSocketConfig(receive_type=name).receive_type == name


async def test_a_bare_websocket_takes_typed_messages_and_closes_with_1007(serve: Serve) -> None:
    """Without an App: Bocadillo's constructor, `async with ws`, typed value types."""
    received: list[object] = []

    async def handler(ws: WebSocket) -> None:
        async with ws:
            async for message in ws:
                received.append(message)
                await ws.send(Echo("echo", message.user, len(received)))

    server = await serve(websocket_app(handler, receive_type=Join, send_type=Echo))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/") as client:
            await client.send_message('{"type": "join", "user": "ann"}')
            assert json.loads(await client.get_message()) == {
                "type": "echo",
                "said": "ann",
                "count": 1,
            }
            await client.send_message('{"type": "join"}')
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (1007, "invalid message: $.user: required field missing")
    assert received == [Join("join", "ann")]
