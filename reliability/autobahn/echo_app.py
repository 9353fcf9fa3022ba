"""The app Autobahn|Testsuite's fuzzing client talks to: every message comes back as it came.

python reliability/autobahn/echo_app.py [--bind HOST:PORT] [--max-message-size N]
                                        [--bare] [--stop-on-eof]

Prints ``listening on ws://HOST:PORT`` on stdout once the server is bound (the default bind,
``127.0.0.1:0``, takes any free port), then serves on hypercorn's trio worker until SIGINT
or SIGTERM (or, with ``--stop-on-eof``, until its standard input closes: a runner that dies
without cleaning up then takes the server with it).

``--bare`` serves a plain ASGI echo app on hypercorn as it is (trio_bocaws's hypercorn fixes
uninstalled) instead: the baseline that tells a trio_bocaws problem from a server one.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import hypercorn.trio
import trio

import trio_bocaws

# Case group 9 sends messages of up to 16 MiB (9.1.6 and 9.2.6: exactly 2**24 bytes), so
# that is the least this app must accept: hypercorn refuses only a message *over* the limit
# (with 2**24 - 1 those two cases fail with 1009). ServerConfig's default is far smaller.
MAX_MESSAGE_SIZE: Final = 2**24

app = trio_bocaws.App()


# caught_close_codes=all: the fuzzer closes with every valid code (case group 7); none of
# them is an error of the app's, and the server log should show only real problems.
@app.websocket_route("/", value_type="event", caught_close_codes=all)
async def echo(ws: trio_bocaws.WebSocket) -> None:
    async for event in ws:
        # The ASGI event carries exactly one of text and bytes, so the frame type is kept.
        await ws.send(
            {"type": "websocket.send", "text": event.get("text"), "bytes": event.get("bytes")}
        )


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    """The same echo in plain ASGI, with nothing of trio_bocaws in the way."""
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send(
                {
                    "type": "websocket.send",
                    "text": message.get("text"),
                    "bytes": message.get("bytes"),
                }
            )


async def _serve_bare(
    config: trio_bocaws.ServerConfig,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(
                hypercorn.trio.serve,
                bare_app,
                config.to_hypercorn(),
                shutdown_trigger=shutdown_trigger,
                mode="asgi",
            )
        )
        task_status.started([bind.replace("http", "ws", 1) for bind in binds])


async def _wait_for_eof() -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    while await stdin.receive_some():
        pass


async def _main(bind: str, max_message_size: int, bare: bool, stop_on_eof: bool) -> None:
    config = trio_bocaws.ServerConfig(
        bind=bind, max_message_size=max_message_size, log_level="warning"
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        stop = trio.Event()

        async def stop_on(source: Callable[[], Awaitable[Any]]) -> None:
            await source()
            stop.set()

        async with trio.open_nursery() as watchers:
            watchers.start_soon(stop_on, signals.__anext__)
            if stop_on_eof:
                watchers.start_soon(stop_on, _wait_for_eof)
            async with trio.open_nursery() as server:
                if bare:
                    serve = partial(_serve_bare, config, stop.wait)
                else:
                    serve = partial(trio_bocaws.serve, app, config, shutdown_trigger=stop.wait)
                urls = await server.start(serve)
                print(f"listening on {urls[0]}", flush=True)
            # The server returns once its shutdown is over (graceful_timeout at most).
            watchers.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help=f"largest message accepted (default {MAX_MESSAGE_SIZE}, what case group 9 needs)",
    )
    parser.add_argument(
        "--bare", action="store_true", help="plain ASGI echo on unpatched hypercorn (baseline)"
    )
    parser.add_argument(
        "--stop-on-eof", action="store_true", help="also stop when standard input closes"
    )
    arguments = parser.parse_args(argv)
    # hypercorn writes its own error log to stderr; trio_bocaws's goes there too, in the same
    # shape, and not through the root logger, which would print hypercorn's a second time.
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    )
    logger = logging.getLogger("trio_bocaws")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    if arguments.bare:
        trio_bocaws.hypercorn_fixes.uninstall()
    trio.run(
        _main,
        arguments.bind,
        arguments.max_message_size,
        arguments.bare,
        arguments.stop_on_eof,
    )


if __name__ == "__main__":
    main()
