"""One hypercorn trio worker with trio_bocaws's runner features around it.

:func:`run_worker` is the one place where they are put together, for :func:`trio_bocaws.serve`,
``python -m trio_bocaws`` (each worker process) and :func:`trio_bocaws.testing.serving`:

- open WebSockets hear of the shutdown when it starts (:mod:`trio_bocaws._shutdown`);
- in a worker process of a command line, SIGTERM starts the graceful shutdown too;
- the write timeout (``TCP_USER_TIMEOUT``) of every accepted connection;
- the garbage collector's setting (:mod:`trio_bocaws._gc`).

Our options travel as a :class:`WorkerOptions`, never as attributes of hypercorn's
``Config``; the connections the worker serves find them through a context variable (every
task the worker starts inherits it). Under ``hypercorn --worker-class trio module:app``
the only hook is the import of the app, so the patched ``worker_serve`` builds the options
from what that command line can say (see :func:`from_hypercorn_config`).
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Final

import attrs
import trio

from .._gc import full_collections_after
from .._shutdown import ServerShutdown, announce_shutdown

__all__ = [
    "DEFAULT_WRITE_TIMEOUT",
    "WRITE_TIMEOUT_OPTION",
    "WorkerOptions",
    "current_options",
    "from_hypercorn_config",
    "run_worker",
    "serve_app",
    "worker_serve",
]

DEFAULT_WRITE_TIMEOUT: Final = 30.0
"""Seconds a connection may leave sent data unacknowledged (a client not reading) before
the kernel drops it. Long enough for a stalled mobile network to recover."""

WRITE_TIMEOUT_OPTION: Final = "trio_bocaws_write_timeout"
"""The key of a hypercorn configuration file (``hypercorn --config``) that sets the write
timeout under hypercorn's own command line, which has no other way to say it."""


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, (int, float)) or not value > 0):
        raise ValueError(f"{attribute.name} must be a number above 0 or None, not {value!r}")


@attrs.frozen(kw_only=True)
class WorkerOptions:
    """What trio_bocaws adds to one hypercorn trio worker.

    Attributes:
        write_timeout: Seconds before the kernel drops a connection whose sent data stays
            unacknowledged, or ``None``.
        gc_full_threshold: The collector's third threshold while serving, or ``None`` to
            leave it.
        sigterm: Whether SIGTERM starts the graceful shutdown (a worker process of a
            command line; a program that calls :func:`trio_bocaws.serve` has its own
            signal handling).
    """

    write_timeout: float | None = attrs.field(
        default=DEFAULT_WRITE_TIMEOUT, validator=_positive_or_none
    )
    gc_full_threshold: int | None = None
    sigterm: bool = False


_DEFAULT_OPTIONS: Final = WorkerOptions()
_OPTIONS: Final[ContextVar[WorkerOptions | None]] = ContextVar(
    "trio_bocaws.worker_options", default=None
)


def current_options() -> WorkerOptions:
    """The options of the worker serving the current connection (the defaults outside
    one: a server started some other way)."""
    return _OPTIONS.get() or _DEFAULT_OPTIONS


async def run_worker(
    worker_serve: Callable[..., Awaitable[None]],
    app: Any,
    config: Any,
    options: WorkerOptions,
    *,
    sockets: Any = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run hypercorn's ``worker_serve`` (the original, unpatched) with our features.

    Args:
        worker_serve: hypercorn's ``hypercorn.trio.run.worker_serve``.
        app: The app, wrapped as hypercorn wraps it (``hypercorn.utils.wrap_app``).
        config: hypercorn's ``Config``.
        options: Ours.
        sockets: As for ``worker_serve``.
        shutdown_trigger: Returns when the graceful shutdown should begin.
        task_status: Given the bound addresses once listening.
    """
    token = _OPTIONS.set(options)
    try:
        with contextlib.ExitStack() as stack:
            if options.sigterm:
                signals = stack.enter_context(trio.open_signal_receiver(signal.SIGTERM))
                shutdown_trigger = _or_signal(shutdown_trigger, signals)
            shutdown_trigger = stack.enter_context(
                announce_shutdown(shutdown_trigger, ServerShutdown())
            )
            stack.enter_context(full_collections_after(options.gc_full_threshold))
            await worker_serve(
                app,
                config,
                sockets=sockets,
                shutdown_trigger=shutdown_trigger,
                task_status=task_status,
            )
    finally:
        _OPTIONS.reset(token)


def from_hypercorn_config(config: Any, shutdown_trigger: Any) -> WorkerOptions:
    """The options under ``hypercorn --worker-class trio``: the write timeout of its
    configuration file, SIGTERM in the worker processes it starts, the collector as is."""
    return WorkerOptions(
        write_timeout=getattr(config, WRITE_TIMEOUT_OPTION, DEFAULT_WRITE_TIMEOUT),
        sigterm=_is_command_line_worker(shutdown_trigger),
    )


def worker_serve(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``hypercorn.trio.run.worker_serve``, for hypercorn's own command line and
    ``hypercorn.trio.serve``: the same worker as ours, with options from its config."""

    async def worker_serve(  # the signature of hypercorn.trio.run.worker_serve
        app: Any,
        config: Any,
        *,
        sockets: Any = None,
        shutdown_trigger: Any = None,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await run_worker(
            original,
            app,
            config,
            from_hypercorn_config(config, shutdown_trigger),
            sockets=sockets,
            shutdown_trigger=shutdown_trigger,
            task_status=task_status,
        )

    return worker_serve


def _is_command_line_worker(shutdown_trigger: Any) -> bool:
    """Whether this is a worker process that hypercorn's command line started."""
    from hypercorn.utils import check_multiprocess_shutdown_event

    return (
        isinstance(shutdown_trigger, functools.partial)
        and shutdown_trigger.func is check_multiprocess_shutdown_event
    )


def _or_signal(
    shutdown_trigger: Callable[[], Awaitable[Any]] | None, signals: Any
) -> Callable[[], Awaitable[None]]:
    """Also treat a signal (from ``signals``, a Trio signal receiver) as the trigger.

    A supervisor asks its workers to stop through a shared event they poll every 0.1 s,
    and hypercorn's SIGTERMs the others as soon as the first worker has exited; a trio
    worker dies of that at once, and its clients see 1006. The receiver stays open for the
    whole life of the worker, so that a SIGTERM that comes during the shutdown is absorbed.
    """

    async def trigger() -> None:
        async with trio.open_nursery() as nursery:

            async def first_of(wait: Callable[[], Awaitable[Any]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            if shutdown_trigger is not None:
                nursery.start_soon(first_of, shutdown_trigger)
            nursery.start_soon(first_of, signals.__anext__)

    return trigger


async def serve_app(
    app: Any,
    config: Any,
    options: WorkerOptions,
    *,
    sockets: Any = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an ASGI ``app`` on one trio worker: :func:`run_worker` around hypercorn's own
    ``worker_serve`` (never around our patch of it, which would wrap the worker twice)."""
    from hypercorn.utils import wrap_app

    from . import original

    await run_worker(
        original("hypercorn.trio.run", "worker_serve"),  # type: ignore[arg-type]
        wrap_app(app, config.wsgi_max_body_size, "asgi"),
        config,
        options,
        sockets=sockets,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )
