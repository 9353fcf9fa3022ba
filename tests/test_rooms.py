"""Room history (ids, bounds, resume without gap or duplicate) and presence, on the memory
backend, on a real redis-server, and on a real three-node Redis Cluster."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_bocaws import (
    Broadcast,
    BroadcastConfig,
    HistoryGap,
    PresenceChange,
    RoomConfig,
    WebSocketStateError,
)
from trio_bocaws.testing import open_websocket, serving

from .apps.rooms import make_app
from .fake_asgi import FakeServer
from .redis_cluster import redis_cluster
from .redis_server import COREDIS_LEFTOVERS, redis_server

TIMEOUT = 10
KEEP_5 = RoomConfig(history_size=5)

pytestmark = COREDIS_LEFTOVERS


@pytest.fixture(params=["memory", "redis", "cluster"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    if request.param == "cluster":
        async with redis_cluster(tmp_path) as cluster_url:
            yield cluster_url
    else:
        async with redis_server(tmp_path) as server:
            yield server.url
    gc.collect()


def texts(server: FakeServer) -> list[str]:
    return [m["text"] for m in server.sent if m["type"] == "websocket.send"]


# -- History -------------------------------------------------------------------------------


async def test_ids_increase_and_history_returns_the_kept_messages(url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with Broadcast(url) as hub:
            room = hub.room("lobby", config=KEEP_5)
            ids = [await room.send_text(f"m{n}") for n in range(7)]
            ids.append(await room.send_json({"n": 7}))
            ids.append(await room.send_bytes(b"\x00eight"))
            assert all(isinstance(i, str) for i in ids)
            numbers = [tuple(map(int, str(i).split("-"))) for i in ids]
            assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)

            kept = await room.history()
            assert [m.id for m in kept] == ids[-5:]
            assert [m.data for m in kept] == ["m4", "m5", "m6", '{"n":7}', b"\x00eight"]
            assert [m.is_json for m in kept] == [False, False, False, True, False]
            assert [m.id for m in await room.history(limit=2)] == ids[-2:]
            assert [m.id for m in await room.history(since=ids[5])] == ids[6:]
            assert [m.id for m in await room.history(since=ids[5], limit=1)] == [ids[6]]
            assert await room.history(since=ids[-1]) == []
            # The same room, by name, without repeating its config.
            assert hub.room("lobby").config == KEEP_5


async def test_a_room_without_history_is_todays_room(url: str) -> None:
    async with Broadcast(url) as hub:
        room = hub.room("plain")
        assert await room.send_text("x") is None
        assert await room.send({"a": 1}) is None
        with pytest.raises(ValueError, match="keeps no history"):
            await room.history()
        server = FakeServer()
        async with server.websocket() as ws:
            with pytest.raises(ValueError, match="keeps no history"):
                await room.join(ws, since="1-0")
            with pytest.raises(ValueError, match="no presence"):
                await room.join(ws, key="ada")
            with pytest.raises(ValueError, match="no presence"):
                await room.presence()


async def test_history_gap_past_the_bound_and_for_unknown_ids(url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with Broadcast(url) as hub:
            room = hub.room("r", config=KEEP_5)
            with pytest.raises(HistoryGap) as empty:
                await room.history(since="1-0")  # nothing was ever sent
            assert empty.value.oldest is None
            ids = [await room.send_text(str(n)) for n in range(8)]
            server = FakeServer()
            async with server.websocket() as ws:
                with pytest.raises(HistoryGap, match="cannot resume after") as gap:
                    await room.join(ws, since=ids[1])  # 2..7 kept: ids[2] was dropped
                assert (gap.value.since, gap.value.oldest) == (ids[1], ids[3])
                assert room.members == 0  # not a member: nothing delivered
                ms, _ = map(int, str(ids[-1]).split("-"))
                with pytest.raises(HistoryGap):
                    await room.join(ws, since=f"{ms + 1000}-0")  # never issued
                with pytest.raises(ValueError, match="not a message id"):
                    await room.join(ws, since="latest")
                with pytest.raises(TypeError, match="a str"):
                    await room.join(ws, since=5)  # type: ignore[arg-type]
                # The oldest kept one resumes: the four after it come.
                await room.join(ws, since=ids[3])
                await room.send_text("live")
                with trio.fail_after(TIMEOUT):
                    while len(texts(server)) < 5:  # noqa: ASYNC110 - Redis delivers
                        await trio.sleep(0.01)
            assert texts(server) == ["4", "5", "6", "7", "live"]


async def test_resuming_from_the_last_id_after_it_was_trimmed_misses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = RoomConfig(history_age=60)
    async with Broadcast() as hub:
        room = hub.room("r", config=config)
        first = await room.send_text("old")
        last = await room.send_text("newer")
        await trio.sleep(61)
        assert await room.history() == []  # both older than a minute
        with pytest.raises(HistoryGap) as gap:
            await room.history(since=first)
        assert gap.value.oldest is None
        assert await room.history(since=last) == []  # the last id: nothing came after it


@settings(max_examples=60, deadline=None)
@given(
    before=st.integers(1, 12),
    resume_at=st.integers(0, 11),
    pauses=st.lists(st.integers(0, 3), max_size=15),
    join_after=st.integers(0, 6),
)
async def test_resume_while_others_publish_misses_and_repeats_nothing(
    before: int, resume_at: int, pauses: list[int], join_after: int
) -> None:
    """Whatever the interleaving of the join's steps with the publisher's sends."""
    resume_at = min(resume_at, before - 1)
    async with Broadcast(config=BroadcastConfig(rooms=RoomConfig(history_size=64))) as hub:
        room = hub.room("r")
        ids = [await room.send_text(f"b{n}") for n in range(before)]
        server = FakeServer()
        async with server.websocket() as ws, trio.open_nursery() as nursery:

            async def publish() -> None:
                for number, pause in enumerate(pauses):
                    for _ in range(pause):
                        await trio.lowlevel.checkpoint()
                    await room.send_text(f"d{number}")

            nursery.start_soon(publish)
            for _ in range(join_after):
                await trio.lowlevel.checkpoint()
            await room.join(ws, since=ids[resume_at], envelope=True)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    received = [json.loads(text) for text in texts(server)]
    # Every message after the resumed id, whether sent before the join or during it, each
    # exactly once and in order.
    expected = [f"b{n}" for n in range(resume_at + 1, before)]
    expected += [f"d{n}" for n in range(len(pauses))]
    assert [m["message"] for m in received] == expected
    got_ids = [tuple(map(int, m["id"].split("-"))) for m in received]
    assert got_ids == sorted(set(got_ids))


async def test_resume_over_a_real_server_while_publishing(url: str) -> None:
    """Clients reconnect from different ids while a sender keeps talking; each receives
    every message after its id once, in order."""
    app = make_app(url)
    with trio.fail_after(2 * TIMEOUT):
        async with serving(app) as server:
            base = f"{server.url}/rooms/busy"

            async def receive_json(client: Any) -> Any:
                return json.loads(await client.get_message())

            async with open_websocket(f"{base}?user=talker") as talker:
                assert await receive_json(talker) == {"joined": "busy"}
                ids: list[str] = []
                for number in range(10):
                    await talker.send_message(f"m{number}")
                while len(ids) < 10:
                    message = await receive_json(talker)
                    if "sent" in message:
                        ids.append(message["sent"])

                async def keep_talking(task_status: trio.TaskStatus[None]) -> None:
                    task_status.started()
                    for number in range(10, 40):
                        await talker.send_message(f"m{number}")
                        await trio.lowlevel.checkpoint()

                results: dict[int, list[str]] = {}

                async def resume(position: int) -> None:
                    url = f"{base}?user=u{position}&since={ids[position]}"
                    async with open_websocket(url) as client:
                        got: list[Any] = []
                        while len(got) < 39 - position:
                            message = await receive_json(client)
                            if "message" in message:
                                got.append(message["message"])
                        results[position] = got

                async with trio.open_nursery() as nursery:
                    await nursery.start(keep_talking)
                    for position in (0, 3, 6, 9):
                        nursery.start_soon(resume, position)
    for position, got in results.items():
        assert got == [f"m{n}" for n in range(position + 1, 40)], position


async def test_envelopes_carry_the_ids() -> None:
    async with Broadcast() as hub:
        room = hub.room("r", config=KEEP_5)
        server = FakeServer()
        async with server.websocket() as ws:
            await room.join(ws, envelope=True)
            ids = [
                await room.send_json({"a": [1, "é"]}),
                await room.send_text('he said "hi"'),
                await room.send_bytes(b"\x00\xff"),
            ]
            await trio.testing.wait_all_tasks_blocked()
    assert [json.loads(text) for text in texts(server)] == [
        {"id": ids[0], "message": {"a": [1, "é"]}},
        {"id": ids[1], "message": 'he said "hi"'},
        {"id": ids[2], "bytes": "AP8="},
    ]


def test_room_config_is_checked() -> None:
    with pytest.raises(ValueError, match="history_size"):
        RoomConfig(history_size=0)
    with pytest.raises(ValueError, match="history_age"):
        RoomConfig(history_age=-1)
    hub = Broadcast()
    hub.room("r", config=KEEP_5)
    with pytest.raises(ValueError, match="already has another config"):
        hub.room("r", config=RoomConfig(history_size=6))
    with pytest.raises(TypeError, match="RoomConfig"):
        hub.room("r", config={"history_size": 5})  # type: ignore[arg-type]


# -- Presence ------------------------------------------------------------------------------

PRESENT = RoomConfig(presence=True)


async def test_presence_counts_connections_per_key_and_announces_changes(url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with Broadcast(url) as hub:
            room = hub.room("p", config=PRESENT)
            async with room.watch_presence() as changes:
                await hub.wait_connected()
                assert await room.presence() == {}
                servers = [FakeServer() for _ in range(3)]
                async with trio.open_nursery() as nursery:
                    done = [trio.Event() for _ in servers]

                    async def member(index: int, key: str) -> None:
                        async with servers[index].websocket() as ws:
                            await room.join(ws, key=key)
                            await done[index].wait()

                    nursery.start_soon(member, 0, "ada")
                    assert await changes.receive() == PresenceChange("ada", 1, joined=True)
                    nursery.start_soon(member, 1, "ada")
                    assert await changes.receive() == PresenceChange("ada", 2, joined=True)
                    nursery.start_soon(member, 2, "bob")
                    assert await changes.receive() == PresenceChange("bob", 1, joined=True)
                    assert await room.presence() == {"ada": 2, "bob": 1}
                    done[0].set()
                    assert await changes.receive() == PresenceChange("ada", 1, joined=False)
                    done[2].set()
                    assert await changes.receive() == PresenceChange("bob", 0, joined=False)
                    assert await room.presence() == {"ada": 1}
                    done[1].set()
                    assert await changes.receive() == PresenceChange("ada", 0, joined=False)
                assert await room.presence() == {}


async def test_the_presence_key_defaults_to_the_user() -> None:
    async with Broadcast() as hub:
        room = hub.room("p", config=PRESENT)
        server = FakeServer()
        async with server.websocket() as ws:
            ws._user = "ada"  # as an authenticate hook would have set it
            await room.join(ws)
            assert await room.presence() == {"ada": 1}
        other = FakeServer()
        async with other.websocket() as ws:
            await room.join(ws)  # no user: a key of its own
            (key,) = await room.presence()
            assert key.startswith("anonymous:")
        third = FakeServer()
        async with third.websocket() as ws:
            ws._user = {"name": "ada"}
            with pytest.raises(TypeError, match="pass the presence key"):
                await room.join(ws)


async def test_join_needs_the_connection_nursery_even_with_history() -> None:
    server = FakeServer()
    ws = server.websocket()
    await ws.accept()
    async with Broadcast() as hub:
        with pytest.raises(WebSocketStateError, match="inside `async with ws`"):
            await hub.room("r", config=KEEP_5).join(ws, since="1-0")


async def test_many_leaves_at_once_share_their_trips_to_the_backend(url: str) -> None:
    """A shutdown ends every connection at once: their presence updates are coalesced."""
    with trio.fail_after(TIMEOUT):
        async with Broadcast(url) as hub:
            room = hub.room("p", config=PRESENT)
            backend: Any = hub._backend
            sync = backend.sync_presence
            calls = 0

            async def counting(*args: Any) -> dict[str, int]:
                nonlocal calls
                calls += 1
                return await sync(*args)  # type: ignore[no-any-return]

            backend.sync_presence = counting
            async with trio.open_nursery() as nursery:
                for number in range(100):

                    async def member(key: str, task_status: trio.TaskStatus[None]) -> None:
                        async with FakeServer().websocket() as ws:
                            await room.join(ws, key=key)
                            task_status.started()
                            await trio.sleep_forever()

                    await nursery.start(member, f"k{number}")
                assert len(await room.presence()) == 100
                calls = 0
                nursery.cancel_scope.cancel()
            assert calls <= 5, calls
            assert await room.presence() == {}


async def test_join_takes_since_or_last_not_both() -> None:
    async with Broadcast() as hub:
        room = hub.room("r", config=KEEP_5)
        first = await room.send_text("a")
        async with FakeServer().websocket() as ws:
            with pytest.raises(ValueError, match="since= or last=, not both"):
                await room.join(ws, since=first, last=3)
            with pytest.raises(ValueError, match="last must be"):
                await room.join(ws, last=0)
            with pytest.raises(ValueError, match="limit must be"):
                await room.history(limit=0)


def test_a_cluster_room_name_cannot_hold_braces() -> None:
    hub = Broadcast("redis+cluster://127.0.0.1:7000")  # not connected: no Redis needed
    assert hub.room("lobby").channel == "trio_bocaws.room:{lobby}"
    with pytest.raises(ValueError, match="no braces"):
        hub.room("a{b}")
    assert Broadcast("redis://127.0.0.1:7000/0").room("a{b}").channel == "trio_bocaws.room:a{b}"
    del hub
    gc.collect()  # coredis' unconnected clients warn here, where the module's filter applies
