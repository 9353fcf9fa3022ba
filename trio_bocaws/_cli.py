"""``python -m trio_bocaws module:app``: run an app on hypercorn's trio worker.

``python -m trio_bocaws asyncapi module:app`` prints the app's AsyncAPI document instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, NoReturn

import trio
from hypercorn.utils import LifespanFailureError

from ._gc import DEFAULT_FULL_THRESHOLD
from ._loading import PROGRAM, UsageError, import_failure, load_app
from ._serve import LOG_LEVELS, ServerConfig, run_until_signalled, serve_on_sockets
from ._terminal import configure_logging, exit_now

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _threshold(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or 'none': {value!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROGRAM,
        description="Serve a trio_bocaws (or any ASGI) app on hypercorn's trio worker.",
    )
    parser.add_argument("app", help="the app to serve, as module:attribute (e.g. chat:app)")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "-b",
        "--bind",
        action="append",
        metavar="HOST:PORT",
        help="address to listen on; repeat for several (default 127.0.0.1:8000)",
    )
    parser.add_argument("-w", "--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--certfile", help="TLS certificate (PEM), to serve wss://")
    parser.add_argument("--keyfile", help="TLS private key (PEM)")
    parser.add_argument(
        "--graceful-timeout", type=float, default=5.0, metavar="SECONDS", help="default 5"
    )
    parser.add_argument(
        "--ping-interval", type=float, metavar="SECONDS", help="ping every client this often"
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        metavar="SECONDS",
        help="drop a client silent this long (longer than --ping-interval)",
    )
    parser.add_argument(
        "--max-message-size", type=int, default=2**20, metavar="BYTES", help="default 1 MiB"
    )
    parser.add_argument(
        "--write-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="drop a client that leaves what we send unread this long (default 30)",
    )
    parser.add_argument(
        "--no-http2",
        dest="http2",
        action="store_false",
        help="serve HTTP/1.1 only (no HTTP/2, so no WebSockets over HTTP/2)",
    )
    parser.add_argument(
        "--gc-full-threshold",
        type=_threshold,
        default=DEFAULT_FULL_THRESHOLD,
        metavar="N",
        help="collections of the middle generation before a full one, while serving "
        "(default 100; "
        "'none' leaves the interpreter's setting, CPython's is 10)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument(
        "--reload",
        action="store_true",
        help="development: restart the server when a .py file changes (needs watchfiles)",
    )
    parser.add_argument(
        "--reload-dir",
        action="append",
        metavar="DIR",
        help="with --reload, watch this directory; repeat for several "
        "(default: the working directory)",
    )
    parser.add_argument(
        "--root-path", default="", metavar="PATH", help="the prefix a proxy serves the app under"
    )
    return parser


def _version() -> str:
    from importlib.metadata import version

    from . import __version__

    return (
        f"{PROGRAM} {__version__} (hypercorn {version('hypercorn')}, trio {trio.__version__}, "
        f"Python {sys.version.split()[0]})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    arguments_given = sys.argv[1:] if argv is None else list(argv)
    if arguments_given[:1] == ["asyncapi"]:
        return _print_asyncapi(arguments_given[1:])
    try:
        arguments = _parser().parse_args(argv)
        config = ServerConfig(
            bind=tuple(arguments.bind or ("127.0.0.1:8000",)),
            workers=arguments.workers,
            certfile=arguments.certfile,
            keyfile=arguments.keyfile,
            graceful_timeout=arguments.graceful_timeout,
            ping_interval=arguments.ping_interval,
            read_timeout=arguments.read_timeout,
            max_message_size=arguments.max_message_size,
            write_timeout=arguments.write_timeout,
            http2=arguments.http2,
            root_path=arguments.root_path,
            log_level=arguments.log_level,
            gc_full_threshold=arguments.gc_full_threshold,
        )
        for path in (config.certfile, config.keyfile):
            if path is not None and not os.path.isfile(path):
                raise UsageError(f"no such file: {path}")
        if arguments.reload:
            directories = _reload_directories(arguments.reload_dir, config.workers)
        elif arguments.reload_dir:
            raise UsageError("--reload-dir goes with --reload")
    except (UsageError, ValueError, TypeError) as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
        return 2
    if not arguments.reload:
        try:
            app = load_app(arguments.app)
        except UsageError as exc:
            print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # the app's module failed to import
            print(import_failure(arguments.app, exc), file=sys.stderr, end="")
            return 1
    configure_logging(config.log_level)
    try:
        if arguments.reload:
            from ._reload import run_reloading

            # The app is imported by each child the supervisor starts, never here.
            return run_reloading(arguments.app, config, directories)
        if config.workers == 1:
            run_until_signalled(app, config)
            return 0
        return _run_workers(arguments.app, config)
    except LifespanFailureError as exc:
        print(f"{PROGRAM}: error: the app failed to start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        binds = ", ".join(config.bind)
        print(
            f"{PROGRAM}: error: cannot listen on {binds}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1


def _reload_directories(given: list[str] | None, workers: int) -> list[str]:
    """The directories ``--reload`` watches (checked), or :exc:`UsageError`."""
    from ._reload import check_watcher

    if workers != 1:
        raise UsageError(
            "--reload runs one worker process, restarted on each change; "
            "leave out --workers (or --reload)"
        )
    check_watcher()
    directories = [os.path.abspath(path) for path in given or (os.getcwd(),)]
    for path in directories:
        if not os.path.isdir(path):
            raise UsageError(f"--reload-dir: no such directory: {path}")
    return directories


def _print_asyncapi(argv: Sequence[str]) -> int:
    """``trio-bocaws asyncapi module:app``: print the app's AsyncAPI document."""
    parser = _Parser(
        prog=f"{PROGRAM} asyncapi",
        description="Print the AsyncAPI 3.0 document of a trio_bocaws App's WebSocket routes.",
    )
    parser.add_argument("app", help="the App, as module:attribute (e.g. chat:app)")
    parser.add_argument("--title", help="the API's title (default: the app's module:attribute)")
    parser.add_argument("--api-version", default="1.0.0", help="the API's version (1.0.0)")
    parser.add_argument("--description", help="a description of the API")
    try:
        arguments = parser.parse_args(argv)
        app = load_app(arguments.app, check_asgi=False)
        describe = getattr(app, "asyncapi", None)
        if not callable(describe):
            raise UsageError(f"{arguments.app!r} is not a trio_bocaws App")
        document = describe(
            title=arguments.title or arguments.app,
            version=arguments.api_version,
            description=arguments.description,
        )
    except UsageError as exc:
        print(f"{PROGRAM} asyncapi: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2))
    return 0


def _run_workers(app_path: str, config: ServerConfig) -> int:
    """Bind in this process, run ``config.workers`` worker processes that share the
    sockets, and stop them all gracefully on SIGINT or SIGTERM (or when one fails).

    Each worker process runs trio_bocaws's own worker (:func:`_worker_process`), with the
    :class:`ServerConfig` itself as its argument: no option travels through hypercorn's
    ``Config``, and no worker depends on the import of the app to patch hypercorn.
    """
    hyper = config.to_hypercorn()
    sockets = hyper.create_sockets()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    # The workers inherit "ignore SIGINT": a Ctrl+C reaches the whole process group, and
    # this process alone turns it into a graceful shutdown of every worker.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    processes = [
        context.Process(
            target=_worker_process,
            args=(app_path, config, sockets, stop),
            name=f"{PROGRAM}-worker-{number}",
        )
        for number in range(config.workers)
    ]
    try:
        for process in processes:
            process.start()
        signalled = 0

        def on_signal(*_: object) -> None:
            nonlocal signalled
            signalled += 1
            if signalled == 1:
                logging.getLogger("trio_bocaws").info(
                    "Shutting down %d worker processes: each closes its WebSocket "
                    "connections with 1001 (Ctrl+C again to stop at once)",
                    len(processes),
                )
                stop.set()
            else:
                for process in processes:
                    process.kill()
                exit_now("Second signal: stopping now, without waiting for open connections")

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        failed = _wait_for_workers(processes, stop, config.graceful_timeout)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            sock.close()
    return 1 if failed else 0


def _wait_for_workers(processes: list[Any], stop: Any, graceful_timeout: float) -> bool:
    """Wait until every worker has exited; whether one failed."""
    failed = False
    running = list(processes)
    while running:
        # Wake up now and then to see the stop event set by a signal handler.
        ready = multiprocessing.connection.wait([p.sentinel for p in running], timeout=0.2)
        for process in [p for p in running if p.sentinel in ready]:
            process.join()
            running.remove(process)
            if process.exitcode != 0 and not stop.is_set():
                failed = True
                stop.set()  # one worker failed: stop the others gracefully
        if stop.is_set():
            break
    deadline = time.monotonic() + graceful_timeout + 5  # the workers' own backstop, and some
    for process in running:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
        failed = failed or process.exitcode != 0
    return failed


def _worker_process(app_path: str, config: ServerConfig, sockets: Any, stop: Any) -> None:
    """One worker process: import the app and serve it until ``stop`` is set or SIGTERM."""
    from hypercorn.utils import check_multiprocess_shutdown_event

    configure_logging(config.log_level)
    app = load_app(app_path)
    stopped = partial(check_multiprocess_shutdown_event, stop, trio.sleep)
    trio.run(serve_on_sockets, app, config, sockets, stopped)


def main_entry() -> None:
    """The ``trio-bocaws`` console script."""
    sys.exit(main())
