"""One benchmark server: ``python benchmarks/server.py KIND [--port PORT]``.

KIND is one of:

- ``bare``: a bare ASGI echo app on hypercorn's trio worker, without trio_bocaws imported
  (so without its hypercorn fixes): the floor.
- ``bare+fixes``: the same bare app with trio_bocaws's hypercorn fixes installed, to tell
  the fixes' cost from the WebSocket class's.
- ``trio_bocaws``: a :class:`trio_bocaws.App` echo view, served by :func:`trio_bocaws.serve`
  (what ``python -m trio_bocaws`` runs).
- ``trio_bocaws+metrics``: the same, with metrics on: ``App(metrics=...)`` with an
  OpenTelemetry SDK meter provider and a reader (``InMemoryMetricReader``; nothing reads
  it during the run, as a Prometheus endpoint between scrapes).
- ``starlette``: a Starlette app with a WebSocket route, on hypercorn's trio worker.
- ``trio-websocket``: trio-websocket's own server, ``trio_websocket.serve_websocket``.
- ``websockets-trio``: the websockets library's Trio server, ``websockets.trio.server.serve``
  (compression off and pings off, as the hypercorn servers run).

A hypercorn kind may end in ``@PARTS`` to choose trio_bocaws's lean-path patches (issue 16),
``+``-separated: ``read`` (the read loop, without handing WebSocket bytes straight to the
stream), ``direct`` (``read`` with that), ``send`` (the write), ``none``. ``bare@read+send``
is the bare app on hypercorn with only those patches (no other fix); ``trio_bocaws@none`` is
trio_bocaws with every fix but the lean ones. Without ``@``, trio_bocaws has them all and
``bare`` none.

Every server echoes each message on ``/echo`` (text) and ``/echo-bytes`` (binary), prints
``PORT <n>`` on stdout once it listens, and stops gracefully on SIGTERM or SIGINT.

Environment switches (so that run.py and gc_experiment.py can measure variants side by
side):

- ``BENCH_GC``: what to do with the cyclic garbage collector (when it is set, the
  trio_bocaws server's runner leaves the collector to it), ``+``-separated:
  ``default``; ``off`` (``gc.disable()``); ``freeze`` (``gc.collect(); gc.freeze()`` once
  the server listens); ``freeze-every=SECONDS`` (that, then ``gc.freeze()`` again every so
  often, moving the connections' long-lived objects out of the collector's way);
  ``threshold=A/B/C`` (``gc.set_threshold(A, B, C)``). Example: ``freeze+threshold=10000/10/10``.
- ``BENCH_GC_STATS=PATH``: count collections and the time spent in them (through
  ``gc.callbacks``) and write them as JSON to PATH on SIGUSR1 (on SIGUSR2: after a full
  ``gc.collect()``, which does not reach frozen objects).
- ``BENCH_CPROFILE=PATH``: run under cProfile and dump the stats to PATH on exit.

The process raises its own file-descriptor limit to the hard limit.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import sys
import time
import types
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

KINDS = (
    "bare",
    "bare+fixes",
    "trio_bocaws",
    "trio_bocaws+metrics",
    "starlette",
    "trio-websocket",
    "websockets-trio",
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# -- The apps ------------------------------------------------------------------------------


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The floor: accept, then send back each event's payload as it is."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                return
            if event.get("text") is not None:
                await send({"type": "websocket.send", "text": event["text"]})
            else:
                await send({"type": "websocket.send", "bytes": event["bytes"]})
    elif scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


def trio_bocaws_app(metrics: bool = False) -> Any:
    import attrs

    import trio_bocaws

    # No connection cap (the other servers have none) where this version has one.
    fields = attrs.fields_dict(trio_bocaws.AppConfig)
    config = trio_bocaws.AppConfig(max_connections=None) if "max_connections" in fields else None
    if metrics:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        app = trio_bocaws.App(config=config, metrics=provider)
    else:
        app = trio_bocaws.App(config=config)

    @app.websocket_route("/echo")
    async def echo(ws: trio_bocaws.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    @app.websocket_route("/echo-bytes", value_type="bytes")
    async def echo_bytes(ws: trio_bocaws.WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_text():
            await ws.send_text(message)

    async def echo_bytes(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_bytes():
            await ws.send_bytes(message)

    return Starlette(
        routes=[WebSocketRoute("/echo", echo), WebSocketRoute("/echo-bytes", echo_bytes)]
    )


async def trio_websocket_handler(request: Any) -> None:
    from trio_websocket import ConnectionClosed

    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def websockets_trio_handler(connection: Any) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await connection.send(await connection.recv())
    except ConnectionClosed:
        pass


# -- Serving -------------------------------------------------------------------------------


def hypercorn_config(port: int) -> Any:
    # The settings trio_bocaws.ServerConfig().to_hypercorn() gives, so that the hypercorn
    # servers differ only in the app.
    import hypercorn.config

    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.worker_class = "trio"
    config.graceful_timeout = 5.0
    config.loglevel = "WARNING"
    return config


async def start_server(
    kind: str, port: int, trigger: Callable[[], Awaitable[None]], nursery: trio.Nursery
) -> int:
    """Start the server in ``nursery``; return the port it listens on."""
    if kind == "trio-websocket":
        import trio_websocket

        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket, trio_websocket_handler, "127.0.0.1", port, None
            )
        )

        async def stop_on_trigger() -> None:
            await trigger()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_trigger)
        return int(server.port)
    if kind == "websockets-trio":
        from websockets.trio.server import serve as websockets_serve

        # hypercorn negotiates permessage-deflate only when the client offers it, and the
        # benchmark clients do not; pings are off on the hypercorn servers too.
        ws_server = await nursery.start(
            partial(
                websockets_serve,
                websockets_trio_handler,
                port,
                host="127.0.0.1",
                compression=None,
                ping_interval=None,
            )
        )

        async def stop_websockets_on_trigger() -> None:
            await trigger()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_websockets_on_trigger)
        return int(ws_server.listeners[0].socket.getsockname()[1])
    if kind in ("trio_bocaws", "trio_bocaws+metrics"):
        import trio_bocaws

        urls = await nursery.start(
            partial(
                trio_bocaws.serve,
                trio_bocaws_app(metrics=kind == "trio_bocaws+metrics"),
                trio_bocaws.ServerConfig(
                    bind=(f"127.0.0.1:{port}",), log_level="warning", **runner_gc_options()
                ),
                shutdown_trigger=trigger,
            )
        )
        return int(urls[0].rsplit(":", 1)[1])
    if kind == "bare+fixes":
        import trio_bocaws.hypercorn_fixes as fixes

        if not fixes.installed():
            raise SystemExit("trio_bocaws's hypercorn fixes are not installed (disabled?)")
        app: Any = bare_app
    elif kind == "bare":
        app = bare_app
    elif kind == "starlette":
        app = starlette_app()
    else:
        raise SystemExit(f"unknown server kind {kind!r}; known: {', '.join(KINDS)}")
    import hypercorn.trio

    binds = await nursery.start(
        partial(
            hypercorn.trio.serve,
            app,
            hypercorn_config(port),
            shutdown_trigger=trigger,
            mode="asgi",
        )
    )
    return int(binds[0].rsplit(":", 1)[1])


def runner_gc_options() -> dict[str, Any]:
    """With ``BENCH_GC`` set, the variant alone decides: the runner leaves the collector as
    it is (in versions that set it). Without, the runner does what it does for users."""
    import attrs

    import trio_bocaws

    fields = attrs.fields_dict(trio_bocaws.ServerConfig)
    if "BENCH_GC" in os.environ and "gc_full_threshold" in fields:
        return {"gc_full_threshold": None}
    return {}


def parse_gc_variant(spec: str) -> dict[str, Any]:
    """``freeze+threshold=10000/10/10`` -> ``{"freeze": True, "threshold": (10000, 10, 10)}``."""
    variant: dict[str, Any] = {}
    for part in filter(None, spec.split("+")):
        name, _, value = part.partition("=")
        if name == "default":
            continue
        if name in ("off", "freeze"):
            variant[name] = True
        elif name == "freeze-every":
            variant["freeze"] = True
            variant["freeze_every"] = float(value)
        elif name == "threshold":
            variant["threshold"] = tuple(int(v) for v in value.split("/"))
        else:
            raise SystemExit(f"unknown BENCH_GC part {part!r}")
    return variant


class GCStats:
    """Collections per generation and the seconds spent in them, through gc.callbacks."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.collected = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.collections[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started
            self.collected += info["collected"]

    def snapshot(self) -> dict[str, Any]:
        # Objects the collector tracks (containers), by type: count and shallow size. For
        # working out what an idle connection is made of; strings and bytes are not here.
        by_type: dict[str, list[int]] = {}
        for obj in gc.get_objects():
            if type(obj) is types.CoroutineType:  # which coroutines are suspended, by name
                name = f"coroutine {obj.cr_code.co_qualname}"
            else:
                name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            entry = by_type.setdefault(name, [0, 0])
            entry[0] += 1
            entry[1] += sys.getsizeof(obj)
        return {
            "types": dict(sorted(by_type.items(), key=lambda item: -item[1][1])[:60]),
            "collections": self.collections,
            "seconds": self.seconds,
            "collected": self.collected,
            "tracked_objects": len(gc.get_objects()),
            "frozen_objects": gc.get_freeze_count(),
            "threshold": gc.get_threshold(),
        }


async def main_async(kind: str, port: int) -> None:
    variant = parse_gc_variant(os.environ.get("BENCH_GC", "default"))
    stats_path = os.environ.get("BENCH_GC_STATS")
    stats: GCStats | None = None
    if stats_path:
        stats = GCStats()
        gc.callbacks.append(stats)
    if "threshold" in variant:
        gc.set_threshold(*variant["threshold"])
    if variant.get("off"):
        gc.disable()
    stop = trio.Event()

    async def trigger() -> None:
        await stop.wait()

    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    with trio.open_signal_receiver(*watched) as signals:
        async with trio.open_nursery() as outer:

            async def on_signals() -> None:
                async for signum in signals:
                    if signum in (signal.SIGUSR1, signal.SIGUSR2):
                        if signum == signal.SIGUSR2:
                            gc.collect()
                        if stats is not None and stats_path:
                            with open(stats_path + ".tmp", "w") as file:  # noqa: ASYNC230
                                json.dump(stats.snapshot(), file)
                            os.replace(stats_path + ".tmp", stats_path)
                    elif stop.is_set():
                        outer.cancel_scope.cancel()  # a second signal: stop now
                    else:
                        stop.set()

            outer.start_soon(on_signals)
            async with trio.open_nursery() as nursery:
                bound = await start_server(kind, port, trigger, nursery)
                if variant.get("freeze"):
                    gc.collect()
                    gc.freeze()
                    if "freeze_every" in variant:
                        nursery.start_soon(freeze_every, variant["freeze_every"], stop)
                print(f"PORT {bound}", flush=True)
            outer.cancel_scope.cancel()


async def freeze_every(seconds: float, stop: trio.Event) -> None:
    # Objects that survive a while are the connections' own (tasks, streams, buffers);
    # moving them to the permanent generation keeps full collections from walking them
    # again and again. The price: garbage cycles alive at a freeze are never collected.
    while not stop.is_set():
        with trio.move_on_after(seconds):
            await stop.wait()
        gc.freeze()


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def choose_lean_patches(kind: str, parts: str) -> None:
    """Install trio_bocaws's fixes with only the chosen lean-path patches (``@PARTS``)."""
    import trio_bocaws.hypercorn_fixes  # noqa: F401 (installs every fix, unless disabled)
    from trio_bocaws import _hypercorn
    from trio_bocaws._hypercorn import _lean

    names = {"read": "lean read loop", "direct": "lean read loop", "send": "lean write"}
    chosen = set(filter(None, parts.split("+"))) - {"none"}
    if not chosen <= set(names):
        raise SystemExit(f"unknown lean part in {parts!r}; known: read, direct, send, none")
    _lean.direct_websocket_reads = "direct" in chosen
    wanted = {names[part] for part in chosen}
    _hypercorn.uninstall()
    patches = [
        patch
        for patch in _hypercorn.PATCHES
        if (patch.name in wanted) or (kind != "bare" and not patch.name.startswith("lean "))
    ]
    if not _hypercorn.install(patches):
        raise SystemExit("a chosen patch does not fit this hypercorn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("kind", help=f"{', '.join(KINDS)}, a hypercorn kind with @PARTS")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args()
    kind, _, lean_parts = arguments.kind.partition("@")
    if kind not in KINDS:
        parser.error(f"unknown server kind {kind!r}; known: {', '.join(KINDS)}")
    if lean_parts:
        if kind in ("trio-websocket", "websockets-trio"):
            parser.error(f"{kind} does not run on hypercorn: no lean parts")
        choose_lean_patches(kind, lean_parts)
    arguments.kind = kind
    raise_fd_limit()
    profile_path = os.environ.get("BENCH_CPROFILE")
    if not profile_path:
        trio.run(main_async, arguments.kind, arguments.port)
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        trio.run(main_async, arguments.kind, arguments.port)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)


if __name__ == "__main__":
    main()
