"""Python memory per idle connection, counted by tracemalloc: an App echo view against a
bare ASGI echo app, both over the in-memory ASGI server of the tests (tests/fake_asgi.py).

No sockets, no hypercorn: what the app itself keeps per idle connection (the view's and the
App's frames, the WebSocket, the connection's nursery), the figure the idle-memory guard is
about. The same on every run, unlike RSS. Run from the repository's root::

    python benchmarks/idle_memory.py            # 1,000 connections
    python benchmarks/idle_memory.py -n 5000 --debug

``--debug`` sets the ``trio_bocaws`` logger to DEBUG (the line per connection).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_bocaws
from tests.fake_asgi import FakeServer


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        event = await receive()
        if event["type"] != "websocket.receive":
            return
        await send({"type": "websocket.send", "text": event.get("text")})


def echo_app() -> trio_bocaws.App:
    app = trio_bocaws.App(config=trio_bocaws.AppConfig(max_connections=None))

    @app.websocket_route("/chat/lobby")  # the fake's path
    async def echo(ws: trio_bocaws.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    return app


async def bytes_per_connection(app: Any, count: int) -> float:
    servers = [FakeServer() for _ in range(count)]
    scopes = [server.scope() for server in servers]
    gc.collect()
    async with trio.open_nursery() as nursery:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for server, scope in zip(servers, scopes, strict=True):
            nursery.start_soon(app, scope, server.receive, server.send)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        for server in servers:
            assert server.types_sent == ["websocket.accept"], server.types_sent
        nursery.cancel_scope.cancel()
    return held / count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="idle connections (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the least is kept")
    parser.add_argument("--debug", action="store_true", help="trio_bocaws's logger at DEBUG")
    arguments = parser.parse_args()
    if arguments.debug:
        logger = logging.getLogger("trio_bocaws")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(logging.NullHandler())
    app = echo_app()
    for warm_up in (bare_app, app):  # first-use caches, interned strings
        await bytes_per_connection(warm_up, 50)
    bare = min([await bytes_per_connection(bare_app, arguments.n) for _ in range(arguments.runs)])
    ours = min([await bytes_per_connection(app, arguments.n) for _ in range(arguments.runs)])
    print(f"{arguments.n} idle connections, bytes per connection (tracemalloc):")
    print(f"  bare ASGI app  {bare:8,.0f}")
    print(f"  trio_bocaws    {ours:8,.0f}  ({ours - bare:+,.0f} over bare)")


if __name__ == "__main__":
    trio.run(main)
