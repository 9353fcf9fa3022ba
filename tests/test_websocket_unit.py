"""The WebSocket state machine, driven through in-memory ASGI receive/send."""

from __future__ import annotations

import json
import logging
import math
import pickle
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from trio_bocaws import (
    ALL_CLOSE_CODES,
    UnexpectedMessageType,
    WebSocket,
    WebSocketClosedError,
    WebSocketConfig,
    WebSocketDisconnect,
    WebSocketState,
    WebSocketStateError,
)

from .fake_asgi import FakeServer, make_scope

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

# -- Construction -------------------------------------------------------------------------


def test_refuses_a_scope_that_is_not_a_websocket_scope() -> None:
    server = FakeServer()
    with pytest.raises(ValueError, match="scope of type 'websocket', got 'http'"):
        WebSocket(make_scope(type="http"), server.receive, server.send)


def test_unknown_value_type_names_the_allowed_values() -> None:
    server = FakeServer()
    with pytest.raises(ValueError, match="'text', 'bytes', 'json', 'event'") as info:
        server.websocket(value_type="xml")
    assert "'xml'" in str(info.value)
    with pytest.raises(ValueError, match="receive_type"):
        server.websocket(receive_type="yaml")


def test_value_type_overrides_receive_and_send_types() -> None:
    ws = FakeServer().websocket(value_type="json", receive_type="text", send_type="bytes")
    assert (ws.receive_type, ws.send_type) == ("json", "json")
    ws = FakeServer().websocket(receive_type="bytes")
    assert (ws.receive_type, ws.send_type) == ("bytes", "text")


def test_caught_close_codes_forms() -> None:
    assert set(FakeServer().websocket().caught_close_codes) == {1000, 1001}
    every = FakeServer().websocket(caught_close_codes=all).caught_close_codes
    assert every is ALL_CLOSE_CODES
    assert 4999 in every and 1006 in every
    assert 1000 not in FakeServer().websocket(caught_close_codes=()).caught_close_codes


def test_config_is_shared_not_copied() -> None:
    config = WebSocketConfig(receive_type="json")
    server = FakeServer()
    ws = WebSocket.from_config(make_scope(), server.receive, server.send, config)
    assert ws.config is config
    assert FakeServer().websocket().config is FakeServer().websocket().config


def test_auto_accept_false_overrides_the_config() -> None:
    ws = FakeServer().websocket(auto_accept=False, config=WebSocketConfig(auto_accept=True))
    assert ws.auto_accept is False


# -- Request attributes --------------------------------------------------------------------


def test_request_attributes() -> None:
    ws = FakeServer().websocket()
    assert ws.url == "ws://example.com:8000/chat/lobby?user=ada&tag=a&tag=b"
    assert isinstance(ws.url, str)
    assert (ws.url.scheme, ws.url.hostname, ws.url.port) == ("ws", "example.com", 8000)
    assert (ws.url.path, ws.url.query) == ("/chat/lobby", "user=ada&tag=a&tag=b")
    assert ws.headers["Origin"] == "http://example.com:8000"
    assert ws.headers.getall("X-MULTI") == ["one", "two"]
    with pytest.raises(TypeError):
        ws.headers["new"] = "value"  # type: ignore[index]
    assert ws.query_params["user"] == "ada"
    assert ws.query_params.getall("tag") == ["a", "b"]
    assert ws.subprotocols == ("chat.v1", "chat.v2")
    assert ws.client == ("10.0.0.7", 51000)
    assert ws.client is not None and ws.client.host == "10.0.0.7"
    assert ws.state is WebSocketState.CONNECTING
    assert "chat/lobby" in repr(ws)


def test_url_without_host_header_uses_the_server_address() -> None:
    scope = make_scope(headers=[], scheme="wss", server=("::1", 443), query_string=b"")
    ws = FakeServer().websocket(scope)
    assert ws.url == "wss://[::1]/chat/lobby"
    assert ws.url.hostname == "::1"


# -- Accepting -----------------------------------------------------------------------------


async def test_accept_takes_the_connect_event_then_accepts() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept("chat.v2", headers=[("x-a", "1")])
    assert server.sent == [
        {"type": "websocket.accept", "subprotocol": "chat.v2", "headers": [(b"x-a", b"1")]}
    ]
    assert server.pending == 0
    assert ws.state is WebSocketState.CONNECTED
    assert ws.subprotocol == "chat.v2"


async def test_accepting_twice_is_a_state_error() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    with pytest.raises(WebSocketStateError, match="already accepted"):
        await ws.accept()


@pytest.mark.parametrize(
    ("subprotocol", "headers", "message"),
    [
        ("chat.v3", None, "did not offer it"),
        (7, None, "must be a str"),
        (None, [("Sec-WebSocket-Protocol", "chat.v1")], "accept\\(subprotocol=...\\)"),
        (None, [(":status", "200")], "invalid header name"),
        (None, [("x-ok", "line\nbreak")], "invalid value"),
        (None, [("upgrade", "h2c")], "set by the server"),
        (None, "x-a: 1", "pairs of"),
        (None, [("x-a", "☃")], "latin-1"),
    ],
)
async def test_invalid_accept_arguments_are_refused_before_sending(
    subprotocol: Any, headers: Any, message: str
) -> None:
    server = FakeServer()
    ws = server.websocket()
    with pytest.raises((ValueError, TypeError), match=message):
        await ws.accept(subprotocol, headers=headers)
    assert server.sent == []
    assert ws.state is WebSocketState.CONNECTING


async def test_client_leaving_before_accept() -> None:
    server = FakeServer()
    server._app_inbox.receive_nowait()  # drop the connect event
    server.client_closes(1001, "changed my mind")
    ws = server.websocket()
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.accept()
    assert (info.value.code, info.value.reason) == (1001, "changed my mind")
    assert ws.state is WebSocketState.DISCONNECTED
    await ws.ensure_closed()
    assert server.sent == []


async def test_a_receive_after_the_client_left_before_accept_raises_its_close() -> None:
    # The server reported the client gone before the view did anything (an HTTP/2 stream
    # made on a connection that had closed): the connect event still comes first, and was
    # taken for the client's close (WebSocketStateError, "unexpected ASGI event").
    server = FakeServer()
    server.client_closes(1006)
    ws = server.websocket()
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.receive_text()
    assert info.value.code == 1006
    assert ws.state is WebSocketState.DISCONNECTED
    server = FakeServer()
    server.client_closes(1006)
    async for _ in server.websocket(caught_close_codes=all):
        raise AssertionError("no message came")  # pragma: no cover
    assert server.sent == []


# -- Rejecting -----------------------------------------------------------------------------


async def test_reject_uses_the_http_response_extension() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.reject(401, body="who are you?", headers={"WWW-Authenticate": "Bearer"})
    assert server.sent == [
        {
            "type": "websocket.http.response.start",
            "status": 401,
            "headers": [
                (b"content-length", b"12"),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"www-authenticate", b"Bearer"),
            ],
        },
        {"type": "websocket.http.response.body", "body": b"who are you?"},
    ]
    assert ws.state is WebSocketState.REJECTED
    with pytest.raises(WebSocketClosedError, match="rejected"):
        await ws.send_text("x")
    with pytest.raises(WebSocketClosedError):
        await ws.reject()


async def test_reject_without_the_extension_closes_before_accept() -> None:
    server = FakeServer()
    ws = server.websocket(make_scope(extensions={}))
    await ws.reject(404)
    assert server.types_sent == ["websocket.close"]  # the server answers 403


async def test_close_before_accept_rejects_as_bocadillo_did() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.close(403)
    assert server.sent[0] == {
        "type": "websocket.http.response.start",
        "status": 403,
        "headers": [(b"content-length", b"0")],
    }


async def test_reject_after_accept_closes_1008() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    await ws.reject()
    assert server.close_sent == (1008, "")


@pytest.mark.parametrize("status", [200, 302, 600, "403"])
async def test_reject_refuses_a_status_that_is_not_an_error(status: Any) -> None:
    server = FakeServer()
    with pytest.raises((ValueError, TypeError), match="status"):
        await server.websocket().reject(status)
    assert server.sent == []


# -- Closing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [1004, 1005, 1006, 1015, 1016, 2999, 999, 5000, 403, 0, -1, 1000.0, True]
)
async def test_close_refuses_codes_a_server_may_not_send(code: Any) -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    with pytest.raises((ValueError, TypeError), match=r"close code|close a WebSocket"):
        await ws.close(code)
    assert server.close_sent is None
    assert ws.state is WebSocketState.CONNECTED


async def test_close_refuses_a_reason_over_123_bytes() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    with pytest.raises(ValueError, match="123 bytes"):
        await ws.close(1000, "é" * 62)
    await ws.close(1000, "é" * 61)
    assert server.close_sent == (1000, "é" * 61)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1013, 3000, 4999])
async def test_close_sends_code_and_reason(code: int) -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    await ws.close(code, "bye")
    assert server.close_sent == (code, "bye")
    assert ws.state is WebSocketState.CLOSED


async def test_second_close_is_a_runtime_error_and_ensure_closed_is_quiet() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    await ws.close()
    with pytest.raises(RuntimeError, match="already closed"):
        await ws.close()
    await ws.ensure_closed()
    assert server.types_sent == ["websocket.accept", "websocket.close"]
    for method in (ws.receive_text, ws.receive_bytes, ws.receive_json, ws.receive_event):
        with pytest.raises(WebSocketClosedError, match="closed by the application"):
            await method()


async def test_ensure_closed_closes_an_open_socket_and_answers_a_pending_one() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    await ws.ensure_closed(4000, "done")
    assert server.close_sent == (4000, "done")

    # With auto_accept, as Bocadillo (which accepted before the view ran): accept, close.
    pending = FakeServer()
    ws = pending.websocket()
    await ws.ensure_closed(4001)
    assert pending.types_sent == ["websocket.accept", "websocket.close"]
    assert pending.close_sent == (4001, "")

    # Without it, the handshake is refused.
    pending = FakeServer()
    ws = pending.websocket(auto_accept=False)
    await ws.ensure_closed()
    assert pending.sent[0]["status"] == 403


async def test_ensure_closed_still_validates_its_arguments() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    await ws.close()
    with pytest.raises(ValueError, match="1006"):
        await ws.ensure_closed(1006)


# -- Receiving and sending ----------------------------------------------------------------


async def test_each_receive_type() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    server.client_sends("text")
    server.client_sends(b"bytes")
    server.client_sends('{"a": 1}')
    server.client_sends(b'[1, "\xc3\xa9"]')
    server.client_sends("event")
    assert await ws.receive_text() == "text"
    assert await ws.receive_bytes() == b"bytes"
    assert await ws.receive_json() == {"a": 1}
    assert await ws.receive_json() == [1, "é"]
    assert (await ws.receive_event())["text"] == "event"


async def test_receive_dispatches_on_receive_type() -> None:
    server = FakeServer()
    ws = server.websocket(receive_type="json")
    await ws.accept()
    server.client_sends("[true]")
    assert await ws.receive() == [True]


async def test_wrong_frame_type_is_a_clear_error() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    server.client_sends(b"bin")
    with pytest.raises(UnexpectedMessageType, match="expected a text message") as info:
        await ws.receive_text()
    assert (info.value.expected, info.value.received) == ("text", "bytes")
    assert isinstance(info.value, TypeError)
    server.client_sends("txt")
    with pytest.raises(UnexpectedMessageType, match="expected a bytes message"):
        await ws.receive_bytes()


async def test_invalid_json_raises_json_decode_error() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    server.client_sends("{nope")
    server.client_sends(b"\xff\xfe")
    with pytest.raises(json.JSONDecodeError):
        await ws.receive_json()
    with pytest.raises(json.JSONDecodeError, match="not UTF-8"):
        await ws.receive_json()


async def test_each_send_type() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    await ws.send_text("t")
    await ws.send_bytes(bytearray(b"b"))
    await ws.send_json({"k": "é"})
    await ws.send_event({"type": "websocket.send", "bytes": b"e"})
    assert server.sent[1:] == [
        {"type": "websocket.send", "text": "t"},
        {"type": "websocket.send", "bytes": b"b"},
        {"type": "websocket.send", "text": '{"k":"é"}'},
        {"type": "websocket.send", "bytes": b"e"},
    ]


@pytest.mark.parametrize(
    ("method", "value", "error"),
    [
        ("send_text", b"bytes", TypeError),
        ("send_bytes", "text", TypeError),
        ("send_json", {"x": object()}, TypeError),
        ("send_json", {"x": math.nan}, ValueError),
        ("send_event", {"type": "http.response.start"}, ValueError),
        ("send_event", {"type": "websocket.send", "text": "a", "bytes": b"b"}, ValueError),
        ("send_event", {"type": "websocket.send"}, ValueError),
    ],
)
async def test_bad_values_are_refused_before_sending(method: str, value: Any, error: type) -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    with pytest.raises(error):
        await getattr(ws, method)(value)
    assert server.types_sent == ["websocket.accept"]


async def test_send_event_routes_close_and_accept_through_the_state_machine() -> None:
    server = FakeServer()
    ws = server.websocket(value_type="event")
    await ws.send({"type": "websocket.accept", "subprotocol": "chat.v1"})
    assert ws.subprotocol == "chat.v1"
    await ws.send({"type": "websocket.close", "code": 4001, "reason": "r"})
    assert ws.state is WebSocketState.CLOSED
    with pytest.raises(ValueError, match="1005"):
        await FakeServer().websocket().send_event({"type": "websocket.close", "code": 1005})


async def test_auto_accept_happens_on_first_use() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.send_text("hi")
    assert server.types_sent == ["websocket.accept", "websocket.send"]

    server = FakeServer()
    ws = server.websocket()
    server.client_sends("x")
    assert await ws.receive_text() == "x"
    assert server.types_sent == ["websocket.accept"]


async def test_without_auto_accept_use_before_accept_is_a_state_error() -> None:
    server = FakeServer()
    ws = server.websocket(auto_accept=False)
    with pytest.raises(WebSocketStateError, match=r"call accept\(\) first"):
        await ws.send_text("x")
    with pytest.raises(WebSocketStateError, match="before the connection is accepted"):
        await ws.receive_text()
    assert server.sent == []


async def test_concurrent_receive_is_refused() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.receive_text)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await ws.receive_text()
        server.client_sends("for the first receiver")


async def test_server_send_raising_oserror_means_the_client_is_gone() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    server.send_raises = ConnectionResetError("gone")
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.send_text("x")
    assert info.value.code == 1006
    assert isinstance(info.value.__cause__, OSError)
    assert ws.state is WebSocketState.DISCONNECTED
    server.send_raises = None
    with pytest.raises(WebSocketDisconnect):
        await ws.send_text("x")


async def test_everything_raises_once_the_client_is_gone() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    server.client_closes(4005, "later")
    with pytest.raises(WebSocketDisconnect):
        await ws.receive_text()
    assert ws.close_code == 4005
    calls: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]] = [
        (ws.receive_text, ()),
        (ws.receive_event, ()),
        (ws.send_text, ("x",)),
        (ws.send_json, (1,)),
        (ws.close, ()),
    ]
    for method, args in calls:
        with pytest.raises(WebSocketDisconnect, match="4005: later"):
            await method(*args)
    await ws.ensure_closed()
    assert server.types_sent == ["websocket.accept"]


async def test_a_close_frame_without_a_code_is_reported_as_1005() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    server._to_app.send_nowait({"type": "websocket.disconnect"})
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.receive_text()
    assert info.value.code == 1005


def test_websocket_disconnect_pickles_and_prints() -> None:
    error = pickle.loads(pickle.dumps(WebSocketDisconnect(4001, "bye")))
    assert (error.code, error.reason) == (4001, "bye")
    assert str(error) == "WebSocket disconnected with code 4001: bye"
    assert repr(WebSocketDisconnect(1000)) == "WebSocketDisconnect(1000, '')"
    assert isinstance(error, trio.BrokenResourceError)
    assert issubclass(WebSocketClosedError, trio.ClosedResourceError)
    assert issubclass(WebSocketClosedError, RuntimeError)


# -- async with ----------------------------------------------------------------------------


async def test_async_with_accepts_and_closes_1000() -> None:
    server = FakeServer()
    async with server.websocket() as ws:
        assert ws.state is WebSocketState.CONNECTED
    assert server.close_sent == (1000, "")


async def test_entering_an_accepted_socket_is_fine() -> None:
    server = FakeServer()
    ws = server.websocket(auto_accept=False)
    await ws.accept()
    async with ws:
        pass
    assert server.types_sent == ["websocket.accept", "websocket.close"]


async def test_nested_async_with_closes_once_on_the_way_out() -> None:
    server = FakeServer()
    async with server.websocket() as ws:
        outer_nursery = ws.nursery
        async with ws:
            assert ws.nursery is outer_nursery
            await ws.send_text("inner")
        assert ws.state is WebSocketState.CLOSED
    assert server.types_sent == ["websocket.accept", "websocket.send", "websocket.close"]
    with pytest.raises(WebSocketStateError, match="only inside"):
        ws.nursery  # noqa: B018


async def test_tasks_in_the_connection_nursery_end_with_the_block() -> None:
    server = FakeServer()
    cancelled = trio.Event()

    async def background() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with server.websocket() as ws:
        ws.nursery.start_soon(background)
        await trio.testing.wait_all_tasks_blocked()
    assert cancelled.is_set()
    assert server.close_sent == (1000, "")


async def test_a_failing_connection_task_closes_1011_with_its_error() -> None:
    server = FakeServer()

    async def background() -> None:
        raise LookupError("task failed")

    with pytest.raises(ExceptionGroup) as info:
        async with server.websocket() as ws:
            ws.nursery.start_soon(background)
            await trio.sleep_forever()
    assert [type(error) for error in info.value.exceptions] == [LookupError]
    assert server.close_sent == (1011, "")


async def test_shutdown_cancels_the_block_and_closes_with_the_shutdown_code() -> None:
    from trio_bocaws._shutdown import STATE_KEY, ServerShutdown

    shutdown = ServerShutdown()
    server = FakeServer()
    saw: list[str] = []
    ws = server.websocket(make_scope(state={STATE_KEY: shutdown}))
    async with trio.open_nursery() as nursery:

        async def handler() -> None:
            async with ws:
                try:
                    await ws.receive_text()
                except trio.Cancelled:
                    saw.append("cancelled")
                    raise
            saw.append("block ended quietly")

        nursery.start_soon(handler)
        await trio.testing.wait_all_tasks_blocked()
        assert len(shutdown) == 1
        shutdown.begin()
    assert saw == ["cancelled", "block ended quietly"]
    assert server.close_sent == (1001, "server shutting down")
    assert len(shutdown) == 0


async def test_exception_closes_1011_and_propagates_unwrapped() -> None:
    server = FakeServer()
    with pytest.raises(KeyError, match="boom"):
        async with server.websocket():
            raise KeyError("boom")
    assert server.close_sent == (1011, "")


async def test_caught_disconnect_ends_the_block_quietly() -> None:
    server = FakeServer()
    async with server.websocket() as ws:
        server.client_closes(1001)
        await ws.receive_text()
    assert server.close_sent is None  # nobody left to close to


async def test_uncaught_disconnect_propagates() -> None:
    server = FakeServer()
    with pytest.raises(WebSocketDisconnect) as info:
        async with server.websocket() as ws:
            server.client_closes(4001, "custom")
            await ws.receive_text()
    assert (info.value.code, info.value.reason) == (4001, "custom")


async def test_caught_disconnect_inside_an_exception_group_is_caught_too() -> None:
    """A reader and a writer in one nursery: the reader's disconnect ends the block."""
    server = FakeServer()
    async with server.websocket() as ws:

        async def writer() -> None:
            while True:
                await ws.send_text("tick")
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            server.client_closes(1000)
            await ws.receive_text()


async def test_group_with_another_error_closes_1011() -> None:
    server = FakeServer()
    with pytest.raises(ExceptionGroup):
        async with server.websocket(), trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise ExceptionGroup("two", [ValueError(), WebSocketDisconnect(1000)])
    assert server.close_sent == (1011, "")


async def test_cancellation_sends_1001_then_propagates() -> None:
    server = FakeServer()
    with trio.move_on_after(0.05) as scope:
        async with server.websocket() as ws:
            await ws.receive_text()
    assert scope.cancelled_caught
    assert server.close_sent == (1001, "")


async def test_cancellation_code_and_reason_are_configurable() -> None:
    server = FakeServer()
    config = WebSocketConfig(cancelled_close_code=1012, cancelled_close_reason="restarting")
    with trio.move_on_after(0.05):
        async with server.websocket(config=config) as ws:
            await trio.sleep_forever()
    assert ws.state is WebSocketState.CLOSED
    assert server.close_sent == (1012, "restarting")


async def test_closing_after_an_error_is_bounded_by_close_timeout(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer(send_blocks_on="websocket.close")
    config = WebSocketConfig(close_timeout=2.5)
    start = trio.current_time()
    with pytest.raises(ValueError, match="handler failed"), caplog.at_level(logging.WARNING):
        async with server.websocket(config=config):
            raise ValueError("handler failed")
    assert trio.current_time() - start == pytest.approx(2.5)
    assert "took longer than close_timeout=2.5s" in caplog.text


async def test_a_cancellation_during_cleanup_does_not_replace_the_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(send_blocks_on="websocket.close")
    with trio.move_on_after(1):
        with pytest.raises(ValueError, match="original"):
            async with server.websocket(config=WebSocketConfig(close_timeout=5)):
                raise ValueError("original")


async def test_close_in_cleanup_ignores_a_client_that_left() -> None:
    server = FakeServer()
    with pytest.raises(ValueError, match="mine"):
        async with server.websocket():
            server.send_raises = BrokenPipeError()
            raise ValueError("mine")


# -- async for -----------------------------------------------------------------------------


async def test_async_for_yields_messages_and_ends_on_a_caught_code() -> None:
    server = FakeServer()
    ws = server.websocket(receive_type="json")
    await ws.accept()
    server.client_sends("1")
    server.client_sends("[2]")
    server.client_closes(1000)
    assert [message async for message in ws] == [1, [2]]


async def test_async_for_raises_on_an_uncaught_code() -> None:
    server = FakeServer()
    ws = server.websocket(caught_close_codes=(1000,))
    await ws.accept()
    server.client_sends("a")
    server.client_closes(1001)
    received = []
    with pytest.raises(WebSocketDisconnect):
        async for message in ws:
            received.append(message)
    assert received == ["a"]


# -- Reading in the background ------------------------------------------------------------


async def test_a_send_only_handler_learns_of_the_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(reports_closes=False)
    sends = 0
    with pytest.raises(WebSocketDisconnect) as info:
        async with server.websocket(caught_close_codes=()) as ws:
            while True:
                await ws.send_text("tick")
                sends += 1
                if sends == 10:
                    server.client_closes(4010, "bye")
                await trio.sleep(0.01)
    assert info.value.code == 4010
    assert sends < 20


async def test_messages_arriving_while_the_handler_sends_are_kept_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(reports_closes=False)
    async with server.websocket() as ws:
        for index in range(5):
            server.client_sends(str(index))
        server.client_sends(b"5")
        for _ in range(10):
            await ws.send_text("busy")
            await trio.sleep(0.02)
        assert server.pending == 0  # the background reader took them
        assert [await ws.receive_text() for _ in range(5)] == ["0", "1", "2", "3", "4"]
        assert await ws.receive_bytes() == b"5"
        server.client_sends("later")
        assert await ws.receive_text() == "later"


async def test_the_buffer_is_bounded_and_keeps_backpressure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(reports_closes=False)
    config = WebSocketConfig(max_buffered_messages=3)
    async with server.websocket(config=config) as ws:
        for index in range(10):
            server.client_sends(str(index))
        for _ in range(10):
            await ws.send_text("busy")
            await trio.sleep(0.02)
        # Three taken into the buffer; the rest wait at the server, which stops reading the
        # socket once its own queue is full.
        assert server.pending == 7
        received = [await ws.receive_text() for _ in range(10)]
    assert received == [str(index) for index in range(10)]


async def test_disconnect_after_buffered_messages_is_raised_after_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(reports_closes=False)
    async with server.websocket(caught_close_codes=()) as ws:  # nothing ends it quietly
        server.client_sends("last words")
        server.client_closes(1000)
        with pytest.raises(WebSocketDisconnect):
            for _ in range(10):
                await ws.send_text("busy")
                await trio.sleep(0.02)
        assert ws.state is WebSocketState.DISCONNECTED
        assert await ws.receive_text() == "last words"
        with pytest.raises(WebSocketDisconnect):
            await ws.receive_text()
        await ws.ensure_closed()


async def test_receive_waits_for_the_background_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(reports_closes=False)
    async with server.websocket() as ws:
        for _ in range(10):
            await ws.send_text("busy")
            await trio.sleep(0.02)
        # The reader is now waiting at the server; receive() waits for what it gets.
        async with trio.open_nursery() as nursery:
            got: list[str] = []

            async def receive() -> None:
                got.append(await ws.receive_text())

            nursery.start_soon(receive)
            await trio.sleep(1)
            server.client_sends("hello")
        assert got == ["hello"]
        # After the hand-off, receive() reads from the server directly again.
        server.client_sends("direct")
        assert await ws.receive_text() == "direct"


async def test_a_send_loop_that_never_sleeps_still_yields() -> None:
    """A server that drops sends without yielding must not freeze the event loop: every
    send from the second in a row is a checkpoint, and inside `async with` a reader
    notices the disconnect (no clock involved)."""
    server = FakeServer(reports_closes=False)
    dropped = 0

    async def send_without_checkpoint(message: dict[str, Any]) -> None:
        nonlocal dropped
        if server.pending == 0 and message["type"] == "websocket.send":
            dropped += 1  # like hypercorn after the client left: no checkpoint
            return
        await server.send(message)

    async def close_when_scheduled() -> None:
        await trio.lowlevel.checkpoint()
        server.client_closes(4011)

    server.client_sends("before")
    ws = WebSocket(server.scope(), server.receive, send_without_checkpoint)
    sends = 0
    async with trio.open_nursery() as nursery:
        with pytest.raises(WebSocketDisconnect) as gone:
            async with ws:
                assert await ws.receive_text() == "before"
                nursery.start_soon(close_when_scheduled)
                for _ in range(1000):  # bounded, so that a regression fails, not hangs
                    await ws.send_text("flood")
                    sends += 1
    assert gone.value.code == 4011
    assert sends < 10


async def test_a_failing_server_receive_surfaces_at_the_next_receive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(reports_closes=False)

    async def broken_receive() -> dict[str, Any]:
        if server.pending:
            return await server.receive()  # the connect event
        raise RuntimeError("server bug")

    async with WebSocket(server.scope(), broken_receive, server.send) as ws:
        for _ in range(3):  # a run of sends: the background reader calls the broken receive
            await ws.send_text("busy")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(WebSocketStateError, match="server's receive\\(\\) failed") as info:
            await ws.receive_text()
        assert isinstance(info.value.__cause__, RuntimeError)
        await ws.close()


async def test_closing_while_another_task_waits_in_receive_does_not_hang(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(reports_closes=False)
    outcome: list[BaseException] = []

    async def waiter(ws: WebSocket) -> None:
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            outcome.append(exc)

    async with server.websocket() as ws:
        for _ in range(10):
            await ws.send_text("busy")
            await trio.sleep(0.02)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, ws)
            await trio.sleep(1)  # waiting on the background reader
            await ws.close(4000)
            server.client_closes(4000)  # the client answers the close
    assert [error.code for error in outcome] == [4000]  # type: ignore[attr-defined]
    assert ws.close_code == 4000


async def test_accept_when_the_server_says_the_client_is_gone() -> None:
    server = FakeServer(reports_closes=False)
    server.send_raises = ConnectionResetError()
    ws = server.websocket()
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.accept()
    assert info.value.code == 1006
    assert ws.state is WebSocketState.DISCONNECTED
    assert ws.close_code == 1006


async def test_receive_json_refuses_nan_and_infinity() -> None:
    server = FakeServer(reports_closes=False)
    ws = server.websocket()
    await ws.accept()
    for text in ("NaN", "[Infinity]", '{"x": -Infinity}'):
        server.client_sends(text)
        with pytest.raises(json.JSONDecodeError, match="is not valid JSON"):
            await ws.receive_json()


# -- Honest at every call (a server that reports closes: the adapter's stream status) -----


async def test_state_reads_disconnected_as_soon_as_the_server_processed_the_close() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    server.client_closes(4001, "bye")
    assert ws.state is WebSocketState.DISCONNECTED  # nothing received yet
    assert ws.close_code == 4001


@pytest.mark.parametrize("inside_async_with", [False, True])
async def test_the_first_send_after_the_clients_close_raises_with_its_code(
    inside_async_with: bool,
) -> None:
    server = FakeServer()
    ws = server.websocket(caught_close_codes=())
    with pytest.raises(WebSocketDisconnect) as gone:
        if inside_async_with:
            async with ws:
                server.client_closes(4001, "bye")
                await ws.send_text("lost?")
        else:
            await ws.accept()
            server.client_closes(4001, "bye")
            await ws.send_text("lost?")
    assert (gone.value.code, gone.value.reason) == (4001, "bye")
    assert "websocket.send" not in server.types_sent


async def test_a_send_the_server_refuses_raises_with_the_clients_code() -> None:
    server = FakeServer()
    status = server.status
    assert status is not None

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            # The client's close lands while the send is in the server's hands.
            status.close = (4002, "mid-send")
            raise ConnectionResetError
        await server.send(message)

    ws = WebSocket(server.scope(), server.receive, send)
    await ws.accept()
    with pytest.raises(WebSocketDisconnect) as gone:
        await ws.send_text("x")
    assert (gone.value.code, gone.value.reason) == (4002, "mid-send")
    assert ws.state is WebSocketState.DISCONNECTED


async def test_messages_before_the_close_are_received_before_the_disconnect() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    server.client_sends("one")
    server.client_sends(b"two")
    server.client_closes(4003)
    assert ws.state is WebSocketState.DISCONNECTED
    assert await ws.receive_text() == "one"
    assert await ws.receive_bytes() == b"two"
    with pytest.raises(WebSocketDisconnect) as gone:
        await ws.receive_text()
    assert gone.value.code == 4003
    with pytest.raises(WebSocketDisconnect):  # and again, without waiting on the server
        await ws.receive_text()


# -- Closing under cancellation ------------------------------------------------------------


async def test_a_close_whose_frame_did_not_go_out_is_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer()
    stuck = True

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.close" and stuck:
            await trio.sleep_forever()  # a client that does not read
        await server.send(message)

    ws = WebSocket(server.scope(), server.receive, send, config=WebSocketConfig(close_timeout=1))
    await ws.accept()
    with trio.fail_after(10):  # (virtual seconds)
        await ws.close(4000)
    states = [ws.state]  # the frame never went out
    stuck = False
    await ws.ensure_closed(4001)
    states.append(ws.state)
    assert states == [WebSocketState.CONNECTED, WebSocketState.CLOSED]
    assert server.close_sent == (4001, "")


async def test_a_cancelled_close_still_sends_its_frame_then_raises_cancelled() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    with trio.CancelScope() as scope:
        scope.cancel()
        await ws.close(4000)
    assert scope.cancelled_caught
    assert server.close_sent == (4000, "")
    assert ws.state is WebSocketState.CLOSED


async def test_cancelling_the_connections_nursery_closes_1001() -> None:
    server = FakeServer()
    async with server.websocket() as ws:
        ws.nursery.cancel_scope.cancel()
        await trio.sleep_forever()
    assert server.close_sent == (1001, "")


# -- Bad data from the client ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("receive_type", "data", "error", "close"),
    [
        ("text", b"bin", UnexpectedMessageType, (1003, "expected a text message")),
        ("bytes", "txt", UnexpectedMessageType, (1003, "expected a bytes message")),
        ("json", "{nope", json.JSONDecodeError, (1007, "invalid JSON")),
        ("json", b"\xff", json.JSONDecodeError, (1007, "invalid JSON")),
    ],
)
async def test_bad_data_closes_1003_or_1007_and_still_raises(
    receive_type: str, data: str | bytes, error: type[Exception], close: tuple[int, str]
) -> None:
    server = FakeServer()
    server.client_sends(data)
    with pytest.raises(error):
        async with server.websocket(receive_type=receive_type) as ws:
            await ws.receive()
    assert server.close_sent == close


async def test_the_views_own_json_error_is_still_1011() -> None:
    server = FakeServer()
    with pytest.raises(json.JSONDecodeError):
        async with server.websocket():
            json.loads("{the view's own bug")
    assert server.close_sent == (1011, "")


# -- Bocadillo's accept-first -----------------------------------------------------------------


async def test_close_first_with_auto_accept_accepts_then_closes_with_the_code() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.close(4001, "bad token")
    assert server.types_sent == ["websocket.accept", "websocket.close"]
    assert server.close_sent == (4001, "bad token")
    assert ws.state is WebSocketState.CLOSED


async def test_close_first_without_auto_accept_refuses_the_handshake() -> None:
    server = FakeServer()
    ws = server.websocket(auto_accept=False)
    await ws.close(4001)
    assert server.sent[0]["status"] == 403
    assert ws.state is WebSocketState.REJECTED
