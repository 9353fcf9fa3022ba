"""``python -m trio_bocaws module:app --reload``: serve the app in a child process, and
restart that child when a watched ``.py`` file changes (development only).

The supervisor (this process) binds the listening sockets once and hands them to each
child, so the port stays the same across restarts and a client that connects while the
next child starts waits in the listen backlog instead of being refused. It never imports
the app: only the child does, so a syntax error costs one child, not the supervisor.

Signals: a Ctrl+C in the terminal reaches the whole process group. The child ignores
SIGINT (it is started with SIGINT ignored, before the interpreter could turn one into a
``KeyboardInterrupt``); the supervisor alone decides, and asks the child to stop through a
pipe, exactly once. That keeps the runner's rule, "the second signal forces", true
for the person at the terminal: the first Ctrl+C closes the WebSockets with 1001, the
second kills the child at once.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import multiprocessing
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio
from hypercorn.utils import LifespanFailureError

from ._loading import PROGRAM, UsageError, import_failure, load_app, shown
from ._serve import ServerConfig, _raise_startup_error, serve_on_sockets
from ._terminal import configure_logging, exit_now, log_shutdown_start

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["INSTALL_HINT", "check_watcher", "run_reloading"]

logger = logging.getLogger("trio_bocaws")

INSTALL_HINT = '--reload needs the watchfiles package: pip install "trio-bocaws[reload]"'


# What the supervisor tells a child, through its pipe, when it asks it to stop.
_QUIT = b"quit"
_RESTART = b"restart"


def check_watcher() -> None:
    """Raise :exc:`UsageError` (one line, with the install command) without watchfiles."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


class _Event(enum.Enum):
    CHANGE = enum.auto()
    SIGNAL = enum.auto()
    EXIT = enum.auto()


class _Child:
    """One server process, and the pipe through which the supervisor stops it."""

    def __init__(self, app_path: str, config: ServerConfig, sockets: Any) -> None:
        context = multiprocessing.get_context("spawn")
        # A pipe rather than a multiprocessing.Event: the child learns why it stops
        # (restart or quit), and if the supervisor dies, the end of the pipe stops the
        # child too, instead of leaving it serving the port.
        commands, self._commands = context.Pipe(duplex=False)
        self.process = context.Process(
            target=child_process,
            args=(app_path, config, sockets, commands),
            name=f"{PROGRAM}-reload-child",
        )
        self.stopping = False
        self.exited = False
        # Started with SIGINT ignored, so that the interpreter's startup, before our own
        # code runs, cannot turn a terminal Ctrl+C into a KeyboardInterrupt traceback.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
            commands.close()

    @property
    def running(self) -> bool:
        return not self.exited

    def ask_to_stop(self, *, quitting: bool) -> None:
        """Start the child's graceful shutdown (once)."""
        if not self.stopping:
            self.stopping = True
            with contextlib.suppress(OSError):  # it has just exited: nothing to stop
                self._commands.send_bytes(_QUIT if quitting else _RESTART)

    async def wait(self) -> int:
        """Wait for the child to exit; its exit status."""
        await trio.lowlevel.wait_readable(self.process.sentinel)
        self.process.join()
        self.exited = True
        self._commands.close()
        status = self.process.exitcode
        assert status is not None
        return status


def run_reloading(app_path: str, config: ServerConfig, directories: Sequence[str]) -> int:
    """Serve ``app_path`` in a child process, restarted on each change of a ``.py`` file
    under ``directories``, until SIGINT or SIGTERM; the exit status.

    Raises:
        OSError: An address cannot be bound.
    """
    sockets = config.to_hypercorn().create_sockets()
    try:
        return trio.run(_supervise, app_path, config, sockets, directories)
    finally:
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            sock.close()


async def _supervise(
    app_path: str, config: ServerConfig, sockets: Any, directories: Sequence[str]
) -> int:
    send, events = trio.open_memory_channel[tuple[_Event, Any]](math.inf)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def forward_signals() -> None:
                async for signum in signals:
                    await send.send((_Event.SIGNAL, signum))

            async def watch_exit(child: _Child) -> None:
                await send.send((_Event.EXIT, (child, await child.wait())))

            def start() -> _Child:
                child = _Child(app_path, config, sockets)
                nursery.start_soon(watch_exit, child)
                return child

            async def backstop(child: _Child) -> None:
                # The runner's own deadline: a second past hypercorn's, whose cancellation
                # a view may shield its cleanup from.
                await trio.sleep(config.graceful_timeout + 1)
                if child.running:
                    logger.warning(
                        "Still running %gs after the shutdown began (graceful_timeout): "
                        "stopping now",
                        config.graceful_timeout,
                    )
                    child.process.kill()

            nursery.start_soon(forward_signals)
            await nursery.start(_watch, directories, send)
            child: _Child | None = start()
            quitting = False
            status = 0
            async for event, value in events:
                if event is _Event.SIGNAL:
                    if quitting:
                        if child is not None and child.running:
                            child.process.kill()
                        exit_now(
                            "Second signal: stopping now, without waiting for open connections"
                        )
                    quitting = True
                    if child is None:
                        break
                    if not child.stopping:
                        child.ask_to_stop(quitting=True)
                        nursery.start_soon(backstop, child)
                elif event is _Event.EXIT:
                    exited, code = value
                    if exited is not child:  # pragma: no cover - one child at a time
                        continue
                    if quitting:
                        status = 0 if code == 0 else 1
                        break
                    if child.stopping:
                        child = start()
                    else:
                        child = None
                        logger.warning(
                            "The server stopped (exit status %d): waiting for a change to "
                            "restart it (CTRL + C to quit)",
                            code,
                        )
                elif not quitting:
                    logger.info("Reloading: %s changed", ", ".join(value))
                    if child is None:
                        child = start()
                    elif not child.stopping:
                        child.ask_to_stop(quitting=False)
                        nursery.start_soon(backstop, child)
            nursery.cancel_scope.cancel()
    return status


async def _watch(
    directories: Sequence[str],
    send: trio.MemorySendChannel[tuple[_Event, Any]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send the changed ``.py`` files under ``directories``, a batch at a time, as paths
    relative to the working directory where they are under it."""
    from watchfiles import PythonFilter, awatch

    logger.info("Reloading when a .py file changes in %s", ", ".join(directories))
    task_status.started()
    async for changes in awatch(*directories, watch_filter=PythonFilter()):
        await send.send((_Event.CHANGE, sorted({shown(path) for _, path in changes})))


# -- The child ------------------------------------------------------------------------------


def child_process(app_path: str, config: ServerConfig, sockets: Any, commands: Any) -> None:
    """One server process: import the app and serve it on ``sockets`` until the supervisor
    asks it to stop through ``commands`` (or SIGTERM). Import errors are reported briefly:
    the supervisor waits for a fix."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # No bytecode cache: Python checks one against the source's size and mtime (in whole
    # seconds), so a cache written by this child could pass for an edit made in the same
    # second, and the next child would serve the old code.
    sys.dont_write_bytecode = True
    configure_logging(config.log_level)
    try:
        app = load_app(app_path)
    except UsageError as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        print(import_failure(app_path, exc), file=sys.stderr, end="")
        sys.exit(1)

    async def stop_requested() -> None:
        await trio.lowlevel.wait_readable(commands.fileno())
        try:
            quitting = commands.recv_bytes() == _QUIT
        except EOFError:  # the supervisor is gone
            quitting = True
        if quitting:
            log_shutdown_start(again="Ctrl+C again")
        else:
            log_shutdown_start(again=None, why="Restarting")

    try:
        try:
            trio.run(serve_on_sockets, app, config, sockets, stop_requested)
        except BaseExceptionGroup as group:
            _raise_startup_error(group)
            raise
    except LifespanFailureError as exc:
        print(f"{PROGRAM}: error: the app failed to start: {exc}", file=sys.stderr)
        sys.exit(1)
