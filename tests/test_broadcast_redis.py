"""The broadcast hub through a real redis-server: across hubs, across an outage, and
across two hypercorn worker processes."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

from trio_bocaws import App, Broadcast, BroadcastConfig, BroadcastError, Message, WebSocket

from .conftest import Server, close_code, connect
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


# -- A frozen Redis (SIGSTOP: a hung host, or a network partition) --------------------------

# Short, so that the tests do not wait long for what a frozen Redis never says. The
# keepalive stays at its 15 s: the reader keeps its connection through these freezes.
QUICK = BroadcastConfig(publish_timeout=0.5, connect_timeout=0.5)
# And a reader that checks on Redis every 0.5 s, and reconnects quickly.
WATCHFUL = attrs.evolve(
    QUICK, keepalive_interval=0.5, reconnect_delay=0.1, max_reconnect_delay=0.2
)


async def test_publish_to_a_frozen_redis_raises_and_resumes_when_it_answers(
    redis: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with Broadcast(redis.url, config=QUICK) as hub, hub.subscribe("feed") as feed:
            await hub.wait_connected()
            await hub.publish("feed", "before")
            assert (await feed.receive()).data == "before"
            with redis.frozen():
                with pytest.raises(BroadcastError) as raised:
                    await hub.publish("feed", "during")
                assert str(raised.value) == (
                    f"{redis.url} did not answer within 0.5 s (publish_timeout): "
                    "the message to 'feed' is not confirmed"
                )
            # "during" was sent: a frozen Redis has it, and runs it when it resumes.
            await hub.wait_connected()
            await hub.publish("feed", "after")
            message = await feed.receive()
            if message.data == "during":
                message = await feed.receive()
            assert message == Message("feed", "after")


async def test_the_reader_notices_a_frozen_redis_and_resubscribes_when_it_answers(
    redis: RedisServer,
) -> None:
    """A frozen Redis is lost to the reader once its keepalive goes unanswered; each
    attempt to connect again gives up after connect_timeout, and waits before the next;
    when Redis answers, the subscription is back without the subscriber doing anything."""
    with trio.fail_after(TIMEOUT), _warnings() as warnings:
        async with Broadcast(redis.url, config=WATCHFUL) as hub, hub.subscribe("feed") as feed:
            await hub.wait_connected()
            with redis.frozen():
                assert (await warnings.receive()).startswith(f"broadcast: lost {redis.url} (")
                assert not hub.connected
                for _ in range(2):
                    assert await warnings.receive() == (
                        f"broadcast: {redis.url} did not answer within 0.5 s "
                        "(connect_timeout); trying again in 0.2 s"
                    )
            await hub.wait_connected()
            await redis.publish("feed", b"tfrom elsewhere")
            assert await feed.receive() == Message("feed", "from elsewhere")


class _Recorder(logging.Handler):
    def __init__(self, channel: trio.MemorySendChannel[str]) -> None:
        super().__init__(logging.WARNING)
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        self._channel.send_nowait(record.getMessage())


@contextmanager
def _warnings() -> Iterator[trio.MemoryReceiveChannel[str]]:
    """The warnings of the trio_bocaws logger, as they come."""
    send, receive = trio.open_memory_channel[str](math.inf)
    recorder = _Recorder(send)
    logger = logging.getLogger("trio_bocaws")
    logger.addHandler(recorder)
    try:
        yield receive
    finally:
        logger.removeHandler(recorder)


async def test_a_hub_cannot_start_on_a_frozen_redis(redis: RedisServer) -> None:
    with (
        trio.fail_after(TIMEOUT),
        redis.frozen(),
        pytest.raises(BroadcastError, match=r"did not answer within 0\.5 s \(connect_timeout\)"),
    ):
        async with Broadcast(redis.url, config=QUICK):
            pass  # pragma: no cover


async def test_a_subscription_made_while_redis_is_frozen_takes_effect_when_it_answers(
    redis: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with Broadcast(redis.url, config=QUICK) as hub, AsyncExitStack() as stack:
            await hub.wait_connected()
            with redis.frozen():
                # Returns (after publish_timeout, with a warning): the member is not refused.
                late = await stack.enter_async_context(hub.subscribe("late"))
            # Redis runs the SUBSCRIBE it was sent as it resumes, in no set order with
            # others' commands: publish until it is in place.
            received = None
            while received is None:
                await redis.publish("late", b"thello")
                with trio.move_on_after(0.1):
                    received = await late.receive()
            assert received == Message("late", "hello")


def _room_app(hub: Broadcast) -> App:
    app = App(broadcast=hub)

    @app.websocket_route("/rooms/{name}")
    async def member(ws: WebSocket, name: str) -> None:
        room = hub.room(name)
        await room.join(ws)
        async for text in ws:
            await room.send(text)  # a BroadcastError is not caught: the view fails

    return app


async def test_a_view_whose_room_send_times_out_fails_alone(
    redis: RedisServer, serve: Callable[..., Awaitable[Server]]
) -> None:
    hub = Broadcast(redis.url, config=QUICK)
    server = await serve(_room_app(hub))
    with trio.fail_after(TIMEOUT):
        async with (
            connect(f"{server.url}/rooms/lobby") as ada,
            connect(f"{server.url}/rooms/lobby") as bob,
        ):
            await hub.wait_connected()
            await ada.send_message("hello")
            assert await ada.get_message() == "hello"
            assert await bob.get_message() == "hello"
            with redis.frozen():
                await ada.send_message("into the void")
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ada.get_message()
                assert close_code(closed) == 1011
            # bob's connection went on; his messages reach the room once Redis answers.
            await hub.wait_connected()
            await bob.send_message("still here")
            message = await bob.get_message()
            if message == "into the void":  # the frozen Redis had it, and ran on
                message = await bob.get_message()
            assert message == "still here"
            async with connect(f"{server.url}/rooms/lobby") as eve:
                await eve.send_message("new")
                assert await eve.get_message() == "new"


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
                # Skip who is here and who joined, then talk across the workers.
                await first.send_message(json.dumps({"text": "across workers"}))
                ids = []
                for client in (first, second):
                    while "id" not in (message := await _json(client)):
                        pass
                    assert message["message"]["text"] == "across workers"
                    ids.append(message["id"])
                assert ids[0] == ids[1]  # one message, one id, in the history every worker reads
                done.set()
                # A newcomer on either worker sees it, from the history in Redis.
                async with connect(f"{server.url}/chat/lobby?user=late") as late:
                    while "id" not in (message := await _json(late)):
                        pass
                    assert message == {
                        "id": ids[0],
                        "message": {"user": message["message"]["user"], "text": "across workers"},
                    }
        assert await server.stop() == 0


# -- Settings and messages ----------------------------------------------------------------


def test_the_timeouts_are_positive_numbers() -> None:
    for name in ("publish_timeout", "connect_timeout", "keepalive_interval"):
        for wrong in (0, -1, "5", True):
            with pytest.raises(ValueError, match=f"{name} must be a number above 0, not"):
                BroadcastConfig(**{name: wrong})  # type: ignore[arg-type]
    assert BroadcastConfig().publish_timeout == 5.0


async def test_messages_do_not_show_the_redis_password() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    hub = Broadcast(f"redis://:hunter2@127.0.0.1:{port}/0")
    with trio.fail_after(TIMEOUT), pytest.raises(BroadcastError) as raised:
        async with hub:
            pass  # pragma: no cover
    assert f"cannot connect to redis://:***@127.0.0.1:{port}/0: " in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert "hunter2" not in repr(hub) + repr(hub.room("lobby"))
    gc.collect()  # coredis' leftovers warn here, under this module's filter
