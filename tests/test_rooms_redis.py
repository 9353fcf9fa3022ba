"""Room history and presence shared by separate worker processes through a real
redis-server and a real three-node Redis Cluster: presence across two workers, a killed
worker's presence expiring, history after a worker restarts; and, on one redis-server, what
a Redis restart loses and what a member catches up on after a blip."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_bocaws import (
    Broadcast,
    BroadcastConfig,
    BroadcastError,
    HistoryGap,
    PresenceChange,
    RoomConfig,
)

from .fake_asgi import FakeServer
from .redis_cluster import redis_cluster
from .redis_server import COREDIS_LEFTOVERS, RedisServer, redis_server
from .subprocesses import ServerProcess, server_process

TIMEOUT = 20
ROOMS = RoomConfig(history_size=100, presence=True)

pytestmark = COREDIS_LEFTOVERS


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with redis_server(tmp_path) as server:
        yield server
    gc.collect()


@pytest.fixture(params=["redis", "cluster"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """One redis-server, or a three-node Redis Cluster."""
    if request.param == "cluster":
        async with redis_cluster(tmp_path) as cluster_url:
            yield cluster_url
    else:
        async with redis_server(tmp_path) as server:
            yield server.url
    gc.collect()


def worker(url: str, presence_ttl: float = 30) -> Any:
    """One worker process of tests/apps/rooms.py on this Redis."""
    # --workers 0: the worker is this very process, so that killing it kills the worker.
    command = ["hypercorn", "--worker-class", "trio", "--workers", "0", "-b", "127.0.0.1:0"]
    return server_process(
        [*command, "tests.apps.rooms:app"],
        env={"ROOMS_BROADCAST_URL": url, "ROOMS_PRESENCE_TTL": str(presence_ttl)},
    )


@asynccontextmanager
async def member(server: ServerProcess, query: str) -> AsyncIterator[Any]:
    """A client of /rooms/lobby (with ``since``, its backlog may come before "joined")."""
    from trio_bocaws.testing import open_websocket

    async with open_websocket(f"{server.url}/rooms/lobby?{query}") as client:
        if "since=" not in query:
            assert json.loads(await client.get_message()) == {"joined": "lobby"}
        yield client


async def test_presence_across_two_worker_processes(url: str) -> None:
    async with worker(url) as one, worker(url) as two:
        with trio.fail_after(TIMEOUT):
            hub = Broadcast(url)
            async with hub:
                room = hub.room("lobby", config=ROOMS)
                async with room.watch_presence() as changes:
                    await hub.wait_connected()
                    async with (
                        member(one, "user=ada"),
                        member(two, "user=ada"),
                        member(two, "user=bob") as bob,
                    ):
                        # Counted over both workers (and none in this process).
                        assert await room.presence() == {"ada": 2, "bob": 1}
                        assert room.members == 0
                        await bob.aclose()
                        seen: list[PresenceChange] = []
                        while not seen or seen[-1] != PresenceChange("bob", 0, False):
                            seen.append(await changes.receive())
                        assert await room.presence() == {"ada": 2}


async def test_a_killed_workers_presence_expires_and_others_see_the_leave(url: str) -> None:
    config = BroadcastConfig(presence_ttl=0.6)
    async with worker(url, presence_ttl=0.6) as doomed, worker(url) as survivor:
        with trio.fail_after(TIMEOUT):
            async with (
                Broadcast(url, config=config) as hub,
                member(survivor, "user=bob"),
            ):
                room = hub.room("lobby", config=ROOMS)
                async with room.watch_presence() as changes:
                    await hub.wait_connected()
                    async with member(doomed, "user=ada"):
                        assert await changes.receive() == PresenceChange("ada", 1, True)
                        doomed.process.kill()  # no goodbye: SIGKILL
                        await doomed.process.wait()
                        # This hub watches the room: it clears the dead worker's entries
                        # once they are older than their TTL, and announces the leave.
                        assert await changes.receive() == PresenceChange("ada", 0, False)
                    assert await room.presence() == {"bob": 1}


async def test_history_after_a_worker_restarts(url: str) -> None:
    with trio.fail_after(TIMEOUT):
        ids: list[str] = []
        async with worker(url) as first, member(first, "user=ada") as ada:
            for number in range(5):
                await ada.send_message(f"m{number}")
            while len(ids) < 5:
                message = json.loads(await ada.get_message())
                if "sent" in message:
                    ids.append(message["sent"])
        # A new process, nothing in memory: the history is Redis'.
        async with worker(url) as second, member(second, f"user=ada&since={ids[1]}") as ada:
            got = [json.loads(await ada.get_message()) for _ in range(4)]
            got.remove({"joined": "lobby"})
            assert got == [{"id": ids[n], "message": f"m{n}"} for n in (2, 3, 4)]


async def test_a_redis_restart_without_persistence_loses_the_history(
    redis: RedisServer,
) -> None:
    """The test server runs with neither RDB nor AOF: a restart empties it. A client that
    resumes is told plainly (HistoryGap) instead of being sent what came after."""
    with trio.fail_after(TIMEOUT):
        async with Broadcast(redis.url) as hub:
            room = hub.room("lobby", config=ROOMS)
            last = await room.send_text("before")
            await redis.stop()
            await redis.start()
            await hub.wait_connected()
            with trio.fail_after(5):
                while True:  # the first commands after the restart may meet a dead socket
                    try:
                        await room.send_text("after")
                        break
                    except BroadcastError:
                        await trio.sleep(0.1)
            with pytest.raises(HistoryGap) as gap:
                await room.history(since=last)
            assert [m.data for m in await room.history()] == ["after"]
            assert gap.value.oldest == (await room.history())[0].id


async def _redis_command(redis: RedisServer, *parts: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", redis.port)
    async with stream:
        command = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        await stream.send_all(command)
        return await stream.receive_some()


async def test_a_member_catches_up_on_what_was_sent_while_its_hub_reconnected(
    redis: RedisServer,
) -> None:
    """Pub/sub loses what is published while a hub is not subscribed; a room that keeps
    history sends it to the members once the hub has subscribed again."""
    config = BroadcastConfig(
        rooms=RoomConfig(history_size=100), reconnect_delay=1.0, max_reconnect_delay=1.0
    )
    server = FakeServer()
    with trio.fail_after(TIMEOUT):
        async with (
            Broadcast(redis.url, config=config) as here,
            Broadcast(redis.url, config=config) as there,
            server.websocket() as ws,
        ):
            await here.wait_connected()
            await here.room("lobby").join(ws)
            await there.room("lobby").send_text("before")
            # Drop this hub's subscription, as a network blip would; Redis keeps running.
            assert (await _redis_command(redis, b"CLIENT", b"KILL", b"TYPE", b"pubsub"))[
                :1
            ] == b":"
            while here.connected:  # noqa: ASYNC110 - a state of the hub, not an event
                await trio.sleep(0.01)
            await there.room("lobby").send_text("during")  # no subscriber here gets it live
            await here.wait_connected()
            await there.room("lobby").send_text("after")
            while len(sent_texts(server)) < 3:  # noqa: ASYNC110 - delivered by Redis
                await trio.sleep(0.01)
    assert sent_texts(server) == ["before", "during", "after"]


def sent_texts(server: FakeServer) -> list[str]:
    return [m["text"] for m in server.sent if m["type"] == "websocket.send"]
