"""Room fan-out over a real hypercorn server: how often a relay is let go.

    python benchmarks/broadcast_server.py [--members 300] [--messages 50]

Starts an App on 127.0.0.1 (``trio_bocaws.testing.serving``), connects ``--members``
trio-websocket clients (in this process) to a view that joins one room, sends
``--messages`` messages to the room, and waits until every client has read every one.
Prints the time and how many relay tasks the hub let go with a member whose send did not
complete within ``STALL_ROUNDS`` scheduler rounds: with clients that read, it should be 0.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import trio

from trio_bocaws import App, Broadcast, WebSocket
from trio_bocaws.testing import open_websocket, serving


async def fan_out(members: int, messages: int) -> None:
    hub = Broadcast()
    app = App(broadcast=hub)
    joined = 0
    all_joined = trio.Event()

    @app.websocket_route("/room")
    async def room(ws: WebSocket) -> None:
        nonlocal joined
        await hub.room("r").join(ws)
        joined += 1
        if joined == members:
            all_joined.set()
        await ws.receive_text()

    async with serving(app) as server:
        received = 0
        all_received = trio.Event()

        async def client(task_status: trio.TaskStatus[None]) -> None:
            nonlocal received
            async with open_websocket(server.url + "/room") as connection:
                task_status.started()
                for _ in range(messages):
                    await connection.get_message()
                received += messages
                if received == members * messages:
                    all_received.set()
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            for _ in range(members):
                await nursery.start(client)
            await all_joined.wait()
            started = time.perf_counter()
            for number in range(messages):
                await hub.room("r").send_text(f"message {number}")
            await all_received.wait()
            elapsed = time.perf_counter() - started
            print(
                f"{members} members x {messages} messages: {elapsed:.2f} s,"
                f" relays let go: {hub._relays.let_go}"
            )
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--messages", type=int, default=50)
    arguments = parser.parse_args()
    trio.run(fan_out, arguments.members, arguments.messages)


if __name__ == "__main__":
    main()
