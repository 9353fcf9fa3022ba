"""The broadcast hub with the in-process backend: channels, rooms, slow members."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_bocaws import (
    App,
    Broadcast,
    BroadcastConfig,
    BroadcastOverflow,
    Message,
    WebSocket,
    WebSocketStateError,
)
from trio_bocaws.testing import TestClient

from .fake_asgi import FakeServer


async def test_many_subscribers_get_every_message_in_order() -> None:
    async with Broadcast() as hub:
        received: dict[int, list[str]] = {}

        async def subscriber(index: int, task_status: trio.TaskStatus[None]) -> None:
            async with hub.subscribe("news") as subscription:
                task_status.started()
                received[index] = [(await subscription.receive()).data for _ in range(10)]  # type: ignore[misc]

        async with trio.open_nursery() as nursery:
            for index in range(50):
                await nursery.start(subscriber, index)
            for number in range(10):
                await hub.publish("news", f"item {number}")
        assert hub.subscribers("news") == 0
    expected = [f"item {number}" for number in range(10)]
    assert received == dict.fromkeys(range(50), expected)


async def test_one_subscription_to_several_channels() -> None:
    async with Broadcast() as hub, hub.subscribe("a", "b") as subscription:
        await hub.publish("a", "to a")
        await hub.publish("c", "to nobody")
        await hub.publish("b", b"\x00 to b")
        assert await subscription.receive() == Message("a", "to a")
        assert await subscription.receive() == Message("b", b"\x00 to b")


async def test_leaving_the_block_unsubscribes_also_when_cancelled() -> None:
    async with Broadcast() as hub:
        with trio.move_on_after(0.05) as scope:
            async with hub.subscribe("quiet") as subscription:
                assert hub.subscribers("quiet") == 1
                await subscription.receive()
        assert scope.cancelled_caught
        assert hub.subscribers("quiet") == 0
        await hub.publish("quiet", "nobody listens")  # and nothing is kept for anyone


async def test_a_full_buffer_drops_the_oldest_by_default() -> None:
    hub = Broadcast(config=BroadcastConfig(buffer_size=3))
    async with hub, hub.subscribe("ticks") as subscription:
        for number in range(10):
            await hub.publish("ticks", str(number))  # the publisher never waits
        assert subscription.dropped == 7
        assert [(await subscription.receive()).data for _ in range(3)] == ["7", "8", "9"]


async def test_a_full_buffer_ends_the_subscription_with_close() -> None:
    config = BroadcastConfig(buffer_size=3, on_overflow="close")
    async with Broadcast(config=config) as hub, hub.subscribe("ticks") as subscription:
        for number in range(4):
            await hub.publish("ticks", str(number))
        with pytest.raises(BroadcastOverflow, match="fell 3 messages behind"):
            await subscription.receive()


async def test_publish_takes_text_or_bytes() -> None:
    async with Broadcast() as hub:
        with pytest.raises(TypeError, match="str or bytes, not dict"):
            await hub.publish("c", {"a": 1})  # type: ignore[arg-type]


def test_unknown_backend_and_invalid_config() -> None:
    with pytest.raises(ValueError, match="memory:// or redis://"):
        Broadcast("kafka://localhost")
    with pytest.raises(ValueError, match="on_overflow"):
        BroadcastConfig(on_overflow="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer_size"):
        BroadcastConfig(buffer_size=0)


# -- Rooms -----------------------------------------------------------------------------------


def room_app(hub: Broadcast) -> App:
    app = App(broadcast=hub)

    @app.websocket_route("/rooms/{name}", value_type="json")
    async def member(ws: WebSocket, name: str) -> None:
        room = hub.room(name)
        await room.join(ws)
        async for message in ws:
            await room.send(message)

    return app


async def test_a_room_message_reaches_every_member() -> None:
    hub = Broadcast()
    async with TestClient(room_app(hub)) as client:
        async with (
            client.websocket_connect("/rooms/lobby") as ada,
            client.websocket_connect("/rooms/lobby") as bob,
            client.websocket_connect("/rooms/elsewhere") as eve,
        ):
            await trio.testing.wait_all_tasks_blocked()
            assert hub.room("lobby").members == 2
            await ada.send_json({"from": "ada"})
            assert await ada.receive_json() == {"from": "ada"}
            assert await bob.receive_json() == {"from": "ada"}
            with pytest.raises(trio.TooSlowError):
                await eve.receive_json(timeout=0.1)
        await trio.testing.wait_all_tasks_blocked()
        assert hub.room("lobby").members == 0  # left when their connections ended


async def test_a_room_message_is_json_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import trio_bocaws._room as room_module

    encodings: list[Any] = []
    encode = room_module._dumps

    def counting(data: Any, converter: Any) -> str:
        encodings.append(data)
        return encode(data, converter)

    monkeypatch.setattr(room_module, "_dumps", counting)
    hub = Broadcast()
    app = App(broadcast=hub)
    all_joined = trio.Event()

    @app.websocket_route("/listen")
    async def listen(ws: WebSocket) -> None:
        await hub.room("all").join(ws)
        if hub.room("all").members == 20:
            all_joined.set()
        await ws.receive_text()

    async with TestClient(app) as client, trio.open_nursery() as nursery:
        received: list[Any] = []

        async def member() -> None:
            async with client.websocket_connect("/listen") as ws:
                received.append(await ws.receive_json())

        for _ in range(20):
            nursery.start_soon(member)
        await all_joined.wait()
        await hub.room("all").send_json({"news": "once"})
    assert received == [{"news": "once"}] * 20
    assert encodings == [{"news": "once"}]


async def _stuck_and_healthy_members(config: BroadcastConfig) -> tuple[FakeServer, list[str]]:
    """Two members of a room: one whose client never reads (its sends block), one fine."""
    hub = Broadcast(config=config)
    stuck_server, healthy_server = FakeServer(send_blocks_on="websocket.send"), FakeServer()
    healthy_received: list[str] = []
    async with hub, trio.open_nursery() as nursery:

        async def member(server: FakeServer) -> None:
            async with server.websocket() as ws:
                await hub.room("r").join(ws)
                await trio.sleep_forever()

        nursery.start_soon(member, stuck_server)
        nursery.start_soon(member, healthy_server)
        await trio.testing.wait_all_tasks_blocked()
        for number in range(20):
            await hub.room("r").send_text(str(number))
            await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        healthy_received = [
            m["text"] for m in healthy_server.sent if m["type"] == "websocket.send"
        ]
        nursery.cancel_scope.cancel()
    return stuck_server, healthy_received


async def test_a_stuck_member_never_stalls_the_room() -> None:
    stuck, healthy = await _stuck_and_healthy_members(BroadcastConfig(buffer_size=4))
    assert healthy == [str(number) for number in range(20)]
    assert stuck.close_sent == (1001, "")  # only the test's cancellation ended it


async def test_a_stuck_member_is_closed_with_1013_under_the_close_policy() -> None:
    config = BroadcastConfig(buffer_size=4, on_overflow="close")
    stuck, healthy = await _stuck_and_healthy_members(config)
    assert healthy == [str(number) for number in range(20)]
    assert stuck.close_sent == (1013, "too slow: room messages piled up")


async def test_join_needs_the_connection_nursery() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    async with Broadcast() as hub:
        with pytest.raises(WebSocketStateError, match="inside `async with ws`"):
            await hub.room("r").join(ws)


async def test_leave_and_join_again() -> None:
    hub = Broadcast()
    server = FakeServer()
    async with hub, server.websocket() as ws:
        room = hub.room("r")
        await room.join(ws)
        await room.join(ws)  # joining twice is one membership
        assert room.members == 1
        room.leave(ws)
        assert room.members == 0
        await room.send("not for ws")
        await room.join(ws)
        await room.send_bytes(b"for ws")
        await trio.testing.wait_all_tasks_blocked()
    assert [m.get("bytes") or m.get("text") for m in server.sent[1:-1]] == [b"for ws"]


async def test_app_without_a_hub_says_so() -> None:
    with pytest.raises(WebSocketStateError, match="no broadcast hub"):
        App().broadcast  # noqa: B018
    hub = Broadcast()
    assert App(broadcast=hub).broadcast is hub


# coredis 6.9 leaves a failed connection's memory streams unclosed (see test_broadcast_redis).
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function MemoryObject:pytest.PytestUnraisableExceptionWarning"
)
async def test_a_backend_that_cannot_connect_stops_the_app_from_starting() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    hub = Broadcast(f"redis://127.0.0.1:{port}/0", config=BroadcastConfig(connect_timeout=2))
    with pytest.raises(RuntimeError, match=f"broadcast backend redis://127.0.0.1:{port}/0"):
        async with TestClient(room_app(hub)):
            pass  # pragma: no cover
    gc.collect()  # coredis' leftovers warn here, where the filter applies


def test_messages_are_plain_values() -> None:
    assert Message("c", "x") == Message("c", "x")
    assert json.loads(json.dumps({"m": Message("c", "x").data})) == {"m": "x"}
