"""The broadcast hub through a real redis-server: across hubs, across an outage, and
across two hypercorn worker processes."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_bocaws import Broadcast, BroadcastConfig, BroadcastError, Message

from .conftest import connect
from .redis_server import RedisServer, redis_server
from .subprocesses import server_process

TIMEOUT = 10

# coredis 6.9 creates a connection's anyio memory streams before connecting, and closes
# them only once connected: every connection attempt that fails while Redis is down leaves
# six streams to warn when they are collected. That is coredis', not ours; collected at the
# end of each test here (see the fixture), they are ignored for this module only.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with redis_server(tmp_path) as server:
        yield server
    gc.collect()  # so that coredis' unclosed streams warn in this module, filtered


async def test_two_hubs_on_one_redis_see_each_others_messages(redis: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        here, there = Broadcast(redis.url), Broadcast(redis.url)
        async with here, there, there.subscribe("news") as subscription:
            await here.publish("news", "from here")
            await here.publish("news", b"\x00bytes too")
            assert await subscription.receive() == Message("news", "from here")
            assert await subscription.receive() == Message("news", b"\x00bytes too")


async def test_subscriptions_resume_after_redis_restarts(redis: RedisServer) -> None:
    """What is delivered around an outage.

    - Published before: delivered.
    - Published by this hub during the outage: publish() raises BroadcastError; nothing is
      queued for later.
    - Published by anyone after Redis is back but before the hub has resubscribed: lost
      for this hub (Redis pub/sub keeps no history).
    - Published once the hub is connected again: delivered, with no action from the
      subscriber, whose subscription stayed open throughout.
    """
    config = BroadcastConfig(reconnect_delay=1.0, max_reconnect_delay=1.0)
    with trio.fail_after(TIMEOUT):
        async with Broadcast(redis.url, config=config) as hub, hub.subscribe("feed") as feed:
            await hub.publish("feed", "before")
            assert (await feed.receive()).data == "before"

            await redis.stop()
            # The reader notices at once (its connection closes); until it has, the
            # wait_connected() below would return early.
            while hub.connected:  # noqa: ASYNC110 - a state of the hub, not an event
                await trio.sleep(0.01)
            with pytest.raises(BroadcastError, match="cannot publish"):
                await hub.publish("feed", "during")

            await redis.start()
            # The hub retries once a second: this lands before it has resubscribed.
            await redis.publish("feed", b"tgap")
            await hub.wait_connected()
            await hub.publish("feed", "after")
            # Had "gap" (or "during") been delivered, it would come first.
            assert (await feed.receive()).data == "after"


async def test_unsubscribing_the_last_local_subscriber_unsubscribes_redis(
    redis: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with Broadcast(redis.url) as hub:
            async with hub.subscribe("a"):
                pass
            async with hub.subscribe("b") as b:
                await hub.publish("a", "nobody")
                await hub.publish("b", "somebody")
                assert await b.receive() == Message("b", "somebody")


# -- The chat example on two workers -------------------------------------------------------


def _owner(server_port: int, client_port: int) -> int | None:
    """The PID of the process holding the server end of a TCP connection (Linux /proc)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == server_port and remote_port == client_port:
            inode = fields[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for descriptor in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{descriptor}") == target:
                    return int(pid)
        except OSError:
            continue
    return None


async def _json(client: Any) -> Any:
    return json.loads(await client.get_message())


async def test_chat_clients_on_different_workers_see_each_other(redis: RedisServer) -> None:
    command = [
        "hypercorn",
        "--worker-class",
        "trio",
        "--workers",
        "2",
        "-b",
        "127.0.0.1:0",
        "examples.chat.app:app",
    ]
    async with server_process(
        command, env={"CHAT_BROADCAST_URL": redis.url}, expect_urls=2
    ) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                # Connections go to whichever worker accepts first: keep joining until the
                # room has members on both workers.
                clients: dict[int, Any] = {}
                done = trio.Event()

                async def member(number: int) -> None:
                    async with connect(f"{server.url}/chat/lobby?user=u{number}") as client:
                        pid = None
                        while pid is None:
                            pid = _owner(port, client.local.port)
                            await trio.sleep(0.01)
                        clients.setdefault(pid, client)
                        await done.wait()

                for number in range(30):
                    nursery.start_soon(member, number)
                    await trio.sleep(0.02)
                    if len(clients) == 2:
                        break
                assert len(clients) == 2, "every connection went to one worker"
                first, second = clients.values()
                # Skip the join notices, then talk across the workers.
                await first.send_message(json.dumps({"text": "across workers"}))
                for client in (first, second):
                    while (message := await _json(client)).get("text") is None:
                        pass
                    assert message["text"] == "across workers"
                done.set()
        assert await server.stop() == 0
