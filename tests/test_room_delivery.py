"""How room messages reach members: no task per member, a few relays, slow members let go.

In-memory ASGI connections (tests/fake_asgi.py) whose sends are checkpoints, block for good
(a client that stopped reading), or take a given number of scheduler rounds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_bocaws import App, Broadcast, BroadcastConfig, BroadcastError, WebSocket
from trio_bocaws._room_delivery import RELAYS, STALL_ROUNDS

from .conftest import Server, connect
from .fake_asgi import FakeServer
from .h2_client import open_h2_connection
from .raw_client import raw_connection

Serve = Callable[..., Awaitable[Server]]


def texts(server: FakeServer) -> list[str]:
    return [m["text"] for m in server.sent if m["type"] == "websocket.send"]


def all_tasks() -> int:
    """Tasks alive in this run."""

    def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
        yield task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return len(list(walk(root)))


class RoundsServer(FakeServer):
    """A client that takes ``rounds[n]`` scheduler rounds to take its n-th message."""

    def __init__(self, rounds: list[int]) -> None:
        super().__init__()
        self._rounds = iter(rounds)

    async def send(self, message: object) -> None:
        if isinstance(message, dict) and message.get("type") == "websocket.send":
            for _ in range(next(self._rounds, 0)):
                await trio.lowlevel.checkpoint()
        await super().send(message)


async def _hold(
    hub: Broadcast, server: FakeServer, task_status: trio.TaskStatus[WebSocket]
) -> None:
    async with server.websocket() as ws:
        await hub.room("r").join(ws)
        task_status.started(ws)
        await trio.sleep_forever()


async def test_a_member_costs_no_task_and_leaves_with_its_connection() -> None:
    async with Broadcast() as hub:
        room = hub.room("r")
        server = FakeServer()
        async with server.websocket() as ws:
            await room.join(ws)
            # The membership is a buffer; the hub's relays send it its messages.
            assert ws.nursery.child_tasks == frozenset()
            assert room.members == 1
            await room.send_text("hello")
            await trio.testing.wait_all_tasks_blocked()
        assert room.members == 0
        await room.send_text("after the end")
        await trio.testing.wait_all_tasks_blocked()
    assert texts(server) == ["hello"]


async def test_more_stuck_members_than_relays_hold_up_nobody() -> None:
    """Each member that stopped reading keeps one relay; others take the relays' places,
    so every healthy member gets every message, in order."""
    config = BroadcastConfig(buffer_size=4)
    stuck = [FakeServer(send_blocks_on="websocket.send") for _ in range(3 * RELAYS)]
    healthy = [FakeServer() for _ in range(3 * RELAYS)]
    async with Broadcast(config=config) as hub, trio.open_nursery() as nursery:
        for stuck_one, healthy_one in zip(stuck, healthy, strict=True):
            await nursery.start(_hold, hub, stuck_one)
            await nursery.start(_hold, hub, healthy_one)
        for number in range(10):
            await hub.room("r").send_text(str(number))
            await trio.testing.wait_all_tasks_blocked()
        for server in healthy:
            assert texts(server) == [str(number) for number in range(10)]
        assert all(texts(server) == [] for server in stuck)
        nursery.cancel_scope.cancel()


async def test_a_relay_let_go_with_a_stuck_member_ends_with_its_connection() -> None:
    async with Broadcast() as hub, trio.open_nursery() as nursery:
        await trio.testing.wait_all_tasks_blocked()
        before = all_tasks()
        ws = await nursery.start(_hold, hub, FakeServer(send_blocks_on="websocket.send"))
        await hub.room("r").send_text("never read")
        await trio.testing.wait_all_tasks_blocked()
        # The member's own task, and a relay that waits with it while another took its place.
        assert all_tasks() == before + 2
        ws.nursery.cancel_scope.cancel()  # the connection ends
        await trio.testing.wait_all_tasks_blocked()
        assert hub.room("r").members == 0
        assert all_tasks() == before
        nursery.cancel_scope.cancel()


@settings(max_examples=40, deadline=None)
@given(
    rounds=st.lists(
        st.lists(st.integers(0, STALL_ROUNDS + 2), max_size=12), min_size=1, max_size=2 * RELAYS
    ),
    pauses=st.lists(st.integers(0, 3), min_size=1, max_size=12),
)
async def test_each_member_gets_every_message_once_in_order(
    rounds: list[list[int]], pauses: list[int]
) -> None:
    """Whatever each client's speed (some slow enough for their relay to be let go
    mid-stream), and however the sends interleave with the deliveries."""
    servers = [RoundsServer(member_rounds) for member_rounds in rounds]
    config = BroadcastConfig(buffer_size=len(pauses))
    async with Broadcast(config=config) as hub, trio.open_nursery() as nursery:
        for server in servers:
            await nursery.start(_hold, hub, server)
        for number, pause in enumerate(pauses):
            for _ in range(pause):
                await trio.lowlevel.checkpoint()
            await hub.room("r").send_text(str(number))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    expected = [str(number) for number in range(len(pauses))]
    for server in servers:
        assert texts(server) == expected


async def test_join_on_a_hub_that_is_not_running_says_so() -> None:
    hub = Broadcast()
    async with FakeServer().websocket() as ws:
        with pytest.raises(BroadcastError, match=r"not running.*`async with hub:`"):
            await hub.room("r").join(ws)


# -- Over a real server: HTTP/2, a client that vanishes, a client that sends garbage --------


async def test_a_room_over_http2_and_http1_outlives_members_that_vanish_or_send_garbage(
    serve: Serve,
) -> None:
    """Two members on one HTTP/2 connection and one on HTTP/1.1 get every message, in order,
    while a member's TCP connection vanishes (no close frame) and another sends bytes that
    are no WebSocket frame (the server closes it, 1002): both leave the room, and nobody
    else notices."""
    hub = Broadcast()
    app = App(broadcast=hub)
    room = hub.room("r")

    @app.websocket_route("/room")
    async def member(ws: WebSocket) -> None:
        await room.join(ws)
        async for _ in ws:
            pass

    async def members_become(count: int) -> None:
        while room.members != count:  # noqa: ASYNC110 (bounded by the test's fail_after)
            await trio.sleep(0.01)

    server = await serve(app)
    with trio.fail_after(10):
        async with open_h2_connection(server.url) as h2, connect(server.url + "/room") as h1:
            over_h2 = [await h2.websocket("/room") for _ in range(2)]
            vanishing = await raw_connection(server.url, "/room")
            garbling = await raw_connection(server.url, "/room")
            await members_become(5)
            await vanishing.aclose()
            await garbling.send_all(b"\xff" * 16)  # reserved opcode, RSV bits, no mask
            await members_become(3)
            for number in range(5):
                await room.send_text(f"m{number}")
            expected = [f"m{number}" for number in range(5)]
            assert [await h1.get_message() for _ in expected] == expected
            for ws in over_h2:
                assert [await ws.receive() for _ in expected] == expected
            await garbling.aclose()
