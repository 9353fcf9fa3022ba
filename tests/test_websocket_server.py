"""The WebSocket class on a real hypercorn trio server, seen from a trio-websocket client."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from trio_bocaws import (
    UnexpectedMessageType,
    WebSocket,
    WebSocketClosedError,
    WebSocketDisconnect,
)

from .conftest import Server, client_reason, close_code, close_of, connect, websocket_app

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 5


async def echo(ws: WebSocket) -> None:
    async with ws:
        async for message in ws:
            await ws.send(message)


# -- Value types ------------------------------------------------------------------------


async def test_text_round_trip(serve: Serve) -> None:
    server = await serve(websocket_app(echo))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message("héllo")
            assert await client.get_message() == "héllo"


async def test_bytes_round_trip(serve: Serve) -> None:
    server = await serve(websocket_app(echo, value_type="bytes"))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message(b"\x00\xffbinary")
            assert await client.get_message() == b"\x00\xffbinary"


async def test_json_round_trip_from_text_and_binary_frames(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            async for document in ws:
                await ws.send({"got": document})

    server = await serve(websocket_app(handler, value_type="json"))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message('{"a": [1, 2]}')
            assert json.loads(await client.get_message()) == {"got": {"a": [1, 2]}}
            await client.send_message(json.dumps({"é": None}).encode())
            reply = await client.get_message()
            assert isinstance(reply, str)  # JSON goes out as a text frame
            assert json.loads(reply) == {"got": {"é": None}}


async def test_event_round_trip(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            event = await ws.receive()
            assert event["type"] == "websocket.receive"
            await ws.send({"type": "websocket.send", "text": f"event:{event['text']}"})
            await ws.send({"type": "websocket.send", "bytes": b"raw"})
            await ws.send({"type": "websocket.close", "code": 4000, "reason": "raw close"})

    server = await serve(websocket_app(handler, value_type="event"))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message("x")
            assert await client.get_message() == "event:x"
            assert await client.get_message() == b"raw"
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (4000, "raw close")


async def test_receive_and_send_types_differ(serve: Serve) -> None:
    server = await serve(websocket_app(echo, receive_type="json", send_type="text"))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message('"quoted"')
            assert await client.get_message() == "quoted"


async def test_wrong_frame_type_is_a_clear_error_and_closes_1003(serve: Serve) -> None:
    errors: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        try:
            async with ws:
                await ws.receive_text()
        except UnexpectedMessageType as exc:
            errors.append(exc)

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message(b"binary")
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    # The client's fault: 1003 (unsupported data), not 1011 (a server error).
    assert close_of(closed) == (1003, "expected a text message")
    assert "expected a text message but the client sent a bytes message" in str(errors[0])


async def test_invalid_json_raises_json_decode_error(serve: Serve) -> None:
    errors: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        async with ws:
            try:
                await ws.receive_json()
            except json.JSONDecodeError as exc:
                errors.append(exc)
            await ws.send_text("still open")

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message("{not json")
            assert await client.get_message() == "still open"
    assert len(errors) == 1


async def test_send_json_refuses_unserializable_data_before_sending(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            with pytest.raises(TypeError):
                await ws.send_json({"when": object()})
            await ws.send_json({"ok": True})

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            # The first thing to arrive is the second message: nothing partial was sent.
            assert await client.get_message() == '{"ok":true}'


# -- Handshake ---------------------------------------------------------------------------


async def test_subprotocol_negotiation(serve: Serve) -> None:
    offered: list[tuple[str, ...]] = []

    async def handler(ws: WebSocket) -> None:
        offered.append(ws.subprotocols)
        await ws.accept(subprotocol="chat.v2")
        async with ws:
            await ws.send_text(f"speaking {ws.subprotocol}")

    server = await serve(websocket_app(handler, auto_accept=False))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url, subprotocols=["chat.v1", "chat.v2"]) as client:
            assert client.subprotocol == "chat.v2"
            assert await client.get_message() == "speaking chat.v2"
    assert offered == [("chat.v1", "chat.v2")]


@pytest.mark.parametrize(
    ("subprotocol", "headers"),
    [
        ("not-offered", None),
        (None, [("sec-websocket-protocol", "chat")]),
        (None, [(":authority", "x")]),
        (None, [("x-fine", "bad\r\nvalue")]),
    ],
)
async def test_invalid_accept_is_refused_and_the_server_survives(
    serve: Serve, subprotocol: str | None, headers: Any
) -> None:
    """hypercorn crashes the whole process on these; we refuse them first."""
    errors: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        if ws.url.path == "/bad":
            try:
                await ws.accept(subprotocol=subprotocol, headers=headers)
            except ValueError as exc:
                errors.append(exc)
                await ws.reject(400, body=str(exc))
            return
        await echo(ws)

    server = await serve(websocket_app(handler, auto_accept=False))
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(server.url + "/bad", subprotocols=["chat"]):
                pass  # pragma: no cover
        assert rejected.value.status_code == 400
        # The server is still up and serving.
        async with connect(server.url + "/ok") as client:
            await client.send_message("alive")
            assert await client.get_message() == "alive"
    assert len(errors) == 1


async def test_accept_sends_extra_headers(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept(headers={"X-Server": "bocaws"})
        async with ws:
            await ws.send_text("hi")

    server = await serve(websocket_app(handler, auto_accept=False))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            assert (b"x-server", b"bocaws") in client.handshake_headers
            assert await client.get_message() == "hi"


async def test_reject_before_accept_is_http_403(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.reject()

    server = await serve(websocket_app(handler, auto_accept=False))
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(server.url):
                pass  # pragma: no cover
    assert rejected.value.status_code == 403


async def test_reject_with_status_body_and_headers(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.reject(401, body="log in first", headers=[("www-authenticate", "Bearer")])

    server = await serve(websocket_app(handler, auto_accept=False))
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(server.url):
                pass  # pragma: no cover
    assert rejected.value.status_code == 401
    assert rejected.value.body == b"log in first"
    assert (b"www-authenticate", b"Bearer") in rejected.value.headers


async def test_bocadillo_close_403_before_accept_rejects(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.close(403)

    server = await serve(websocket_app(handler, auto_accept=False))
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(server.url):
                pass  # pragma: no cover
    assert rejected.value.status_code == 403


async def test_reject_with_auto_accept_before_first_use(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        # auto_accept only accepts on first use, so rejecting first still works.
        await ws.reject(403)

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(server.url):
                pass  # pragma: no cover
    assert rejected.value.status_code == 403


async def test_reject_after_accept_closes_1008(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            await ws.receive_text()
            await ws.reject()

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message("let me in")
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_code(closed) == 1008


# -- Closing -----------------------------------------------------------------------------


async def test_close_with_custom_code_and_reason(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            await ws.close(4321, "see you")
            with pytest.raises(WebSocketClosedError):
                await ws.send_text("after close")
            with pytest.raises(RuntimeError):
                await ws.close()
            await ws.ensure_closed()

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (4321, "see you")


async def test_invalid_close_code_is_refused_before_sending(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            for bad in (403, 1005, 1006, 999, 5000):
                with pytest.raises(ValueError, match=str(bad)):
                    await ws.close(bad)
            await ws.close(4000, "valid")

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_code(closed) == 4000


async def test_normal_exit_closes_1000(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            await ws.send_text("bye")

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            assert await client.get_message() == "bye"
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_code(closed) == 1000


async def test_handler_exception_closes_1011(serve: Serve) -> None:
    raised: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        try:
            async with ws:
                await ws.receive_text()
                raise KeyError("boom")
        except KeyError as exc:  # the handler's own exception, not a group around it
            raised.append(exc)

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message("go")
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_code(closed) == 1011
    assert len(raised) == 1


async def test_cancellation_inside_async_with_sends_1001(serve: Serve) -> None:
    cancelled = trio.Event()

    async def handler(ws: WebSocket) -> None:
        with trio.move_on_after(0.2) as scope:
            async with ws:
                await ws.receive_text()  # the client never sends
        if scope.cancelled_caught:
            cancelled.set()

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_code(closed) == 1001
    assert cancelled.is_set()


# -- The client closes -------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 4001])
@pytest.mark.parametrize(
    ("caught", "expect_caught"),
    [(None, {1000, 1001}), ((), set()), (all, {1000, 1001, 4001}), ((4001,), {4001})],
)
async def test_client_close_code_is_caught_or_propagated(
    serve: Serve, code: int, caught: Any, expect_caught: set[int]
) -> None:
    outcome: list[Any] = []
    done = trio.Event()

    async def handler(ws: WebSocket) -> None:
        try:
            async with ws:
                async for message in ws:
                    await ws.send(message)
            outcome.append(("ended quietly", ws.close_code))
        except WebSocketDisconnect as exc:
            outcome.append(("raised", exc.code, exc.reason))
        finally:
            done.set()

    server = await serve(websocket_app(handler, caught_close_codes=caught))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.send_message("ping")
            assert await client.get_message() == "ping"
            await client.aclose(code, f"reason {code}")
        await done.wait()
    if code in expect_caught:
        assert outcome == [("ended quietly", code)]
    else:
        assert outcome == [("raised", code, client_reason(f"reason {code}"))]


async def test_every_receive_and_send_raises_after_the_client_left(serve: Serve) -> None:
    checks: list[str] = []
    done = trio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with pytest.raises(WebSocketDisconnect) as first:
            await ws.receive_text()
        assert (first.value.code, first.value.reason) == (4002, client_reason("leaving"))
        calls: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]] = [
            (ws.receive_text, ()),
            (ws.receive_bytes, ()),
            (ws.receive_json, ()),
            (ws.receive_event, ()),
            (ws.send_text, ("x",)),
            (ws.send_bytes, (b"x",)),
            (ws.send_json, ({},)),
            (ws.close, ()),
        ]
        for method, args in calls:
            with trio.fail_after(1), pytest.raises(WebSocketDisconnect) as again:
                await method(*args)
            assert again.value.code == 4002
            checks.append(method.__name__)
        await ws.ensure_closed()  # never raises on a disconnected socket
        done.set()

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.aclose(4002, "leaving")
        await done.wait()
    assert len(checks) == 8


async def test_send_only_handler_learns_the_client_left(serve: Serve) -> None:
    seen: list[tuple[int, str]] = []
    done = trio.Event()

    async def handler(ws: WebSocket) -> None:
        try:
            async with ws:
                while True:
                    await ws.send_text("tick")
                    await trio.sleep(0.01)
        except WebSocketDisconnect as exc:
            seen.append((exc.code, exc.reason))
        done.set()

    server = await serve(websocket_app(handler, caught_close_codes=()))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            assert await client.get_message() == "tick"
            await client.aclose(4003, "enough")
        await done.wait()
    assert seen == [(4003, client_reason("enough"))]


async def test_send_loop_without_sleep_stops_when_the_client_drops(serve: Serve) -> None:
    """A loop whose only await is send() must not spin forever once the client is gone."""
    seen: list[int] = []
    done = trio.Event()

    async def handler(ws: WebSocket) -> None:
        try:
            async with ws:
                for _ in range(200_000):  # bounded, so that a regression fails, not hangs
                    await ws.send_text("flood")
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
        done.set()

    server = await serve(websocket_app(handler, caught_close_codes=()))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            await client.get_message()
            await client.aclose(4004)
        await done.wait()
        # The worker is not frozen: a new connection is served.
        async with connect(server.url) as other:
            assert await other.get_message() == "flood"
    assert seen[0] == 4004


async def test_messages_received_while_sending_are_kept_in_order(serve: Serve) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            # Busy sending for a while: the background reader takes the client's messages.
            for _ in range(20):
                await ws.send_text("working")
                await trio.sleep(0.01)
            received = [await ws.receive_text() for _ in range(30)]
            await ws.send_json(received)

    server = await serve(websocket_app(handler))
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client:
            for index in range(30):
                await client.send_message(str(index))
            messages = [await client.get_message() for _ in range(21)]
    assert messages[:20] == ["working"] * 20
    assert json.loads(messages[20]) == [str(index) for index in range(30)]


# -- Server shutdown ---------------------------------------------------------------------


@pytest.mark.needs_hypercorn_adapter("the server's shutdown notice cancels the view at once")
async def test_server_shutdown_while_waiting_in_receive_sends_a_close_frame(
    serve: Serve,
) -> None:
    handler_saw: list[str] = []

    async def handler(ws: WebSocket) -> None:
        async with ws:
            try:
                await ws.receive_text()
            except trio.Cancelled:
                handler_saw.append("cancelled")
                raise
        handler_saw.append("ended")

    # hypercorn alone would cancel the handler only at graceful_timeout (30 s here), and
    # the client would then see 1006 unless the close were shielded.
    server = await serve(websocket_app(handler), graceful_timeout=30)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(server.shutdown)
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (1001, "server shutting down")
    assert handler_saw == ["cancelled", "ended"]


@pytest.mark.usefixtures("without_hypercorn_fixes")
async def test_without_the_fixes_shutdown_still_sends_a_close_frame_at_the_deadline(
    serve: Serve,
) -> None:
    async def handler(ws: WebSocket) -> None:
        async with ws:
            await ws.receive_text()

    server = await serve(websocket_app(handler), graceful_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url) as client, trio.open_nursery() as nursery:
            nursery.start_soon(server.shutdown)
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_of(closed) == (1001, "")  # cancelled at the deadline, closed shielded
