"""Broadcast benchmarks, in process: one message to a whole room, and slow members.

    python benchmarks/broadcast.py [--sizes 1000,10000] [--repeat 5] [--relays 1,4,16,64]

1. Time to deliver one JSON message to every member of a room of 1k and 10k connections,
   through ``Room.send_json`` (encoded once, sent by the hub's relays) against a plain
   loop of ``await ws.send_json(...)`` over the same sockets (encoded per socket), side by
   side in one run.
   The same again for a room that keeps history (``RoomConfig(history_size=100)``): each
   message also gets an id and is kept. With ``--relays``, the same for other numbers of
   relay tasks per hub (an experiment: the library's is fixed).
2. Delivery latency to the healthy members when 10% of the room has stopped reading (their
   sends block, as on a client whose buffers are full), against a room where all read.
   A plain loop would wait on the first stuck member forever; the room should not care.

3. Memory per member: the bytes ``room.join`` allocates for each member (its buffer and
   its place in the room), measured with ``tracemalloc``.

Connections are real ``WebSocket`` objects inside ``async with ws`` over an in-memory ASGI
server whose send is a checkpoint (or blocks forever, for a stuck member): this measures
trio_bocaws, not the network. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from trio_bocaws import Broadcast, BroadcastConfig, RoomConfig, WebSocket

SCOPE: dict[str, Any] = {"type": "websocket", "path": "/room", "headers": []}


class Connection:
    """One member: an accepted WebSocket whose sends count arrivals (or block, if stuck)."""

    def __init__(self, on_message: Callable[[], None], stuck: bool = False) -> None:
        self._inbox_send, self._inbox = trio.open_memory_channel[dict[str, Any]](1)
        self._inbox_send.send_nowait({"type": "websocket.connect"})
        self._on_message = on_message
        self._stuck = stuck
        self.ws = WebSocket(SCOPE, self._inbox.receive, self._send)

    async def _send(self, message: Any) -> None:
        if message["type"] != "websocket.send":
            await trio.lowlevel.checkpoint()
            return
        if self._stuck:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        self._on_message()


async def _members(
    nursery: trio.Nursery, count: int, on_message: Callable[[], None], stuck_every: int = 0
) -> list[Connection]:
    connections = []

    async def hold(connection: Connection, task_status: trio.TaskStatus[None]) -> None:
        # As a chat view: inside `async with ws`, waiting for the client's next message.
        async with connection.ws:
            task_status.started()
            await connection.ws.receive_text()

    for index in range(count):
        stuck = bool(stuck_every) and index % stuck_every == 0
        connection = Connection(on_message, stuck)
        await nursery.start(hold, connection)
        connections.append(connection)
    return connections


async def deliver_to_all(
    count: int, repeat: int, history: bool = False, relays: int | None = None
) -> dict[str, float]:
    """Seconds from sending one message until every member's send has completed."""
    message = {"user": "ada", "text": "hello, everyone", "n": list(range(10))}
    results: dict[str, list[float]] = {"room": [], "loop": []}
    rooms = RoomConfig(history_size=100) if history else RoomConfig()
    hub = Broadcast(config=BroadcastConfig(buffer_size=16, rooms=rooms))
    if relays is not None:
        hub._relays.size = relays  # an experiment: the library's own count is fixed
    async with hub, trio.open_nursery() as nursery:
        arrived = 0
        all_arrived = trio.Event()

        def on_message() -> None:
            nonlocal arrived
            arrived += 1
            if arrived == count:
                all_arrived.set()

        connections = await _members(nursery, count, on_message)
        room = hub.room("all")
        for connection in connections:
            await room.join(connection.ws)
        for _ in range(repeat):
            for kind in ("room", "loop"):
                arrived, all_arrived = 0, trio.Event()
                started = time.perf_counter()
                if kind == "room":
                    await room.send_json(message)
                else:
                    for connection in connections:
                        await connection.ws.send_json(message)
                await all_arrived.wait()
                results[kind].append(time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return {kind: statistics.median(times) for kind, times in results.items()}


async def latency_with_stuck_members(count: int, repeat: int, stuck_every: int) -> float:
    """Median seconds for a message to reach every healthy member."""
    hub = Broadcast(config=BroadcastConfig(buffer_size=16))
    times = []
    async with hub, trio.open_nursery() as nursery:
        healthy = count - (len(range(0, count, stuck_every)) if stuck_every else 0)
        arrived = 0
        all_arrived = trio.Event()

        def on_message() -> None:
            nonlocal arrived
            arrived += 1
            if arrived == healthy:
                all_arrived.set()

        connections = await _members(nursery, count, on_message, stuck_every)
        room = hub.room("all")
        for connection in connections:
            await room.join(connection.ws)
        # More messages than a buffer holds: the stuck members' buffers overflow (their
        # oldest messages are dropped) while the healthy ones keep up.
        for number in range(repeat + 20):
            arrived, all_arrived = 0, trio.Event()
            started = time.perf_counter()
            await room.send_json({"n": number})
            await all_arrived.wait()
            if number >= 20:
                times.append(time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return statistics.median(times)


async def memory_per_member(count: int) -> float:
    """Bytes allocated by ``room.join`` per member (and still held)."""
    hub = Broadcast(config=BroadcastConfig(buffer_size=16))
    async with hub, trio.open_nursery() as nursery:
        connections = await _members(nursery, count, lambda: None)
        room = hub.room("all")
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for connection in connections:
            await room.join(connection.ws)
        await trio.testing.wait_all_tasks_blocked()  # every forwarder parked
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        nursery.cancel_scope.cancel()
    return held / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--relays",
        help="comma-separated relay counts to compare (the first table only), e.g. 1,4,8,16,64",
    )
    arguments = parser.parse_args()
    sizes = [int(size) for size in arguments.sizes.split(",")]

    print("One message to every member (median of", arguments.repeat, "runs)")
    print(
        f"{'members':>8}  {'history':>7}  {'Room.send_json':>15}  {'plain loop':>12}"
        f"  {'room/loop':>9}"
    )
    for size in sizes:
        for history in (False, True):
            result = trio.run(deliver_to_all, size, arguments.repeat, history)
            ratio = result["room"] / result["loop"]
            print(
                f"{size:>8}  {'yes' if history else 'no':>7}  {result['room'] * 1e3:>12.1f} ms"
                f"  {result['loop'] * 1e3:>9.1f} ms  {ratio:>9.2f}"
            )

    if arguments.relays:
        print()
        print("Relays per hub (no history; the library uses 16)")
        for size in sizes:
            for relays in [int(count) for count in arguments.relays.split(",")]:
                result = trio.run(deliver_to_all, size, arguments.repeat, False, relays)
                ratio = result["room"] / result["loop"]
                print(f"{size:>8}  {relays:>4} relays  room/loop {ratio:>5.2f}")

    print()
    print("Delivery to the healthy members (median of", arguments.repeat, "messages)")
    print(f"{'members':>8}  {'all reading':>12}  {'10% stuck':>12}  {'ratio':>6}")
    for size in sizes:
        all_reading = trio.run(latency_with_stuck_members, size, arguments.repeat, 0)
        some_stuck = trio.run(latency_with_stuck_members, size, arguments.repeat, 10)
        print(
            f"{size:>8}  {all_reading * 1e3:>9.1f} ms  {some_stuck * 1e3:>9.1f} ms"
            f"  {some_stuck / all_reading:>6.2f}"
        )
    print()
    print("Memory per member (allocated by room.join, still held)")
    for size in sizes:
        print(f"{size:>8}  {trio.run(memory_per_member, size):>9.0f} bytes")
    print()
    print("A plain loop over the same sockets never finishes with a stuck member in the room:")
    print("its first blocked send holds every member after it.")


if __name__ == "__main__":
    main()
