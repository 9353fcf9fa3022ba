"""Serving an ASGI app on hypercorn's trio worker, with graceful WebSocket shutdown."""

from __future__ import annotations

import logging
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final

import attrs
import hypercorn.config
import trio

from ._errors import leaves
from ._gc import DEFAULT_FULL_THRESHOLD
from ._hypercorn._worker import WorkerOptions, serve_app
from ._terminal import announce, configure_logging, force_after, log_shutdown_start

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ServerConfig", "run", "serve"]

LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>[0-9]{1,5})$")


def _to_binds(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(value)
    raise TypeError(f"bind must be a str or a sequence of str, not {value!r}")


def _check_binds(_: object, attribute: attrs.Attribute[Any], binds: tuple[str, ...]) -> None:
    if not binds:
        raise ValueError("bind needs at least one address")
    for bind in binds:
        if not isinstance(bind, str):
            raise TypeError(f"bind addresses are str, not {bind!r}")
        if bind.startswith("unix:") and len(bind) > len("unix:"):
            continue
        found = _HOST_PORT.fullmatch(bind)
        if found is None or int(found.group("port")) > 65535:
            raise ValueError(
                f"invalid bind address {bind!r}: use HOST:PORT (127.0.0.1:8000, "
                "[::1]:8000, 0.0.0.0:0 for any free port) or unix:PATH"
            )


def _positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None and attribute.name in ("ping_interval", "read_timeout", "write_timeout"):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number above 0, not {value!r}")


def _check_root_path(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or (
        value and (not value.startswith("/") or value.endswith("/"))
    ):
        raise ValueError(
            f"root_path must be '' or a path like /chat (no trailing /), not {value!r}"
        )


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an int of at least 1, not {value!r}")


def _positive_int_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _positive_int(_, attribute, value)


@attrs.frozen(kw_only=True)
class ServerConfig:
    """How :func:`serve` and ``python -m trio_bocaws`` run hypercorn's trio worker.

    Immutable; change with :func:`attrs.evolve`. :meth:`to_hypercorn` gives the
    equivalent ``hypercorn.config.Config``.

    Attributes:
        bind: Addresses to listen on, ``HOST:PORT`` or ``unix:PATH``; port 0 picks a free one.
        workers: Worker processes (the command line only; :func:`serve` runs one).
        certfile: TLS certificate (PEM); with ``keyfile``, the server speaks ``wss://``.
        keyfile: TLS private key (PEM).
        graceful_timeout: Seconds a shutdown may take before hypercorn cancels what is
            still running. trio_bocaws closes WebSockets at the start of the shutdown, so
            this is a backstop.
        ping_interval: Seconds between pings to each client, or ``None`` for no pings.
        read_timeout: Seconds without anything from a client (pongs count) before it is
            dropped. Must be longer than ``ping_interval``, which it requires: hypercorn
            never checks pongs itself, so a dead peer is only noticed this way.
        max_message_size: Largest message accepted, in bytes (1 MiB; hypercorn's own default
            is 16 MiB); a larger one closes the connection with 1009.
        write_timeout: Seconds a client may leave what we sent unread (its receive window
            shut) before its connection is dropped, or ``None``. hypercorn's writes cannot
            be cancelled, so without this a client that stops reading holds the handler
            that sends to it, and the server's shutdown, forever. On HTTP/1.1 the kernel
            drops the connection (``TCP_USER_TIMEOUT``, Linux only); on HTTP/2 it applies
            to each stream: a WebSocket whose flow-control window stays shut this long is
            reset, and the other streams of its connection go on. Needs
            :mod:`trio_bocaws.hypercorn_fixes`.
        http2: Whether to speak HTTP/2 (and WebSockets over it, RFC 8441) as well as
            HTTP/1.1: offered through TLS's ALPN, and taken up on the plain port by a
            client that opens with the HTTP/2 preface. ``False`` serves HTTP/1.1 only
            (ALPN offers ``http/1.1`` alone; a plain-port HTTP/2 preface gets 505).
        log_level: ``"debug"``, ``"info"``, ``"warning"``, ``"error"`` or ``"critical"``.
        root_path: The path prefix a reverse proxy serves the app under (``"/chat"``), as
            hypercorn's ``--root-path``: an :class:`~trio_bocaws.App` routes the rest.
        gc_full_threshold: While the server runs, the garbage collector's third threshold
            (:func:`gc.set_threshold`): how many collections of the middle generation come
            before a full one, which walks every open connection. CPython's default is 10;
            100 kept a server with 10,000 connections accepting at a steady rate, for a
            few MiB of garbage that waits longer (see :doc:`/deployment`). ``None``
            leaves the collector as it is.
    """

    bind: tuple[str, ...] = attrs.field(
        default=("127.0.0.1:8000",), converter=_to_binds, validator=_check_binds
    )
    workers: int = attrs.field(default=1, validator=_positive_int)
    certfile: str | None = attrs.field(default=None)
    keyfile: str | None = attrs.field(default=None)
    graceful_timeout: float = attrs.field(default=5.0, validator=_positive)
    ping_interval: float | None = attrs.field(default=None, validator=_positive)
    read_timeout: float | None = attrs.field(default=None, validator=_positive)
    max_message_size: int = attrs.field(default=2**20, validator=_positive_int)
    write_timeout: float | None = attrs.field(default=30.0, validator=_positive)
    http2: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    root_path: str = attrs.field(default="", validator=_check_root_path)
    log_level: str = attrs.field(default="info", validator=attrs.validators.in_(LOG_LEVELS))
    gc_full_threshold: int | None = attrs.field(
        default=DEFAULT_FULL_THRESHOLD, validator=_positive_int_or_none
    )

    def __attrs_post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together: give both for TLS, or neither")
        if self.ping_interval is not None:
            if self.read_timeout is None:
                raise ValueError(
                    "ping_interval needs read_timeout: hypercorn sends pings but never checks "
                    "the pongs, so without a read timeout a dead peer is never dropped"
                )
            if self.read_timeout <= self.ping_interval:
                raise ValueError(
                    f"read_timeout ({self.read_timeout}s) must be longer than ping_interval "
                    f"({self.ping_interval}s), or live clients are dropped between pings"
                )
        elif self.read_timeout is not None:
            raise ValueError(
                "read_timeout without ping_interval drops every client that stays quiet "
                "that long; set ping_interval too (shorter than read_timeout)"
            )

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    def worker_options(self, *, sigterm: bool = False) -> WorkerOptions:
        """What trio_bocaws's worker adds to hypercorn's (``sigterm``: a worker process of
        the command line, where SIGTERM starts the graceful shutdown)."""
        return WorkerOptions(
            write_timeout=self.write_timeout,
            gc_full_threshold=self.gc_full_threshold,
            sigterm=sigterm,
        )

    def to_hypercorn(self) -> hypercorn.config.Config:
        """The equivalent hypercorn configuration (trio worker); trio_bocaws's own
        settings (``write_timeout``, ``gc_full_threshold``) are not hypercorn's, and
        travel as ``worker_options()``."""
        config = hypercorn.config.Config()
        config.bind = list(self.bind)
        config.workers = self.workers
        config.worker_class = "trio"
        config.certfile = self.certfile
        config.keyfile = self.keyfile
        config.graceful_timeout = self.graceful_timeout
        config.websocket_ping_interval = self.ping_interval
        # hypercorn types this as int seconds; it uses it as a trio timeout, floats work.
        config.read_timeout = self.read_timeout  # type: ignore[assignment]
        config.websocket_max_message_size = self.max_message_size
        # hypercorn's own list; trio_bocaws's fixes read it on the plain port too.
        config.alpn_protocols = ["h2", "http/1.1"] if self.http2 else ["http/1.1"]
        config.loglevel = self.log_level.upper()
        config.root_path = self.root_path
        return config


def websocket_urls(binds: Sequence[str]) -> list[str]:
    """hypercorn reports ``http://`` and ``https://``; WebSocket clients want ``ws(s)://``."""
    return [re.sub(r"^http", "ws", bind, count=1) for bind in binds]


async def serve(
    app: Callable[..., Awaitable[None]],
    config: ServerConfig | None = None,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn's trio worker, in this Trio program.

    ``await nursery.start(serve, app, config)`` returns the ``ws://`` (or ``wss://``) URLs
    it listens on. When ``shutdown_trigger`` returns, the server stops accepting, every
    open WebSocket is cancelled and closed with its ``shutdown_close_code`` (1001) at once,
    and ``serve`` returns once the last connection has ended (after ``graceful_timeout``
    at most). Cancelling ``serve`` instead stops everything now; WebSockets inside
    ``async with ws`` still get a close frame (1001).

    Raises:
        ValueError: ``config.workers`` is not 1 (several processes need the command line).
        OSError: An address cannot be bound (in use, say).
        hypercorn.utils.LifespanFailureError: The app failed to start (a startup callback
            of an :class:`~trio_bocaws.App` raised); the message says which and why.
    """
    config = ServerConfig() if config is None else config
    if config.workers != 1:
        raise ValueError(
            "serve() runs one worker inside this Trio program; for several worker "
            "processes use `python -m trio_bocaws --workers N module:app`"
        )
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(
                    serve_app,
                    app,
                    config.to_hypercorn(),
                    config.worker_options(),
                    shutdown_trigger=shutdown_trigger,
                )
            )
            task_status.started(websocket_urls(binds))
    except BaseExceptionGroup as group:
        _raise_startup_error(group)
        raise


async def serve_on_sockets(
    app: Callable[..., Awaitable[None]],
    config: ServerConfig,
    sockets: Any,
    shutdown_trigger: Callable[[], Awaitable[None]],
) -> None:
    """Serve ``app`` on sockets a parent process bound (hypercorn's ``Sockets``), print
    where, and stop gracefully when ``shutdown_trigger`` returns: a ``--workers`` worker's
    and a ``--reload`` child's server."""
    hyper = config.to_hypercorn()
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.listen(hyper.backlog)
    async with trio.open_nursery() as nursery:
        options = config.worker_options(sigterm=True)
        binds = await nursery.start(
            partial(
                serve_app, app, hyper, options, sockets=sockets, shutdown_trigger=shutdown_trigger
            )
        )
        announce(binds, app)


def _raise_startup_error(group: BaseExceptionGroup[BaseException]) -> None:
    """hypercorn's nurseries wrap a failed bind, or a failed lifespan startup, in two
    exception groups; a caller wants the error itself."""
    from hypercorn.utils import LifespanFailureError

    errors = [error for error in leaves(group) if not isinstance(error, trio.Cancelled)]
    if len(errors) == 1 and isinstance(errors[0], (OSError, LifespanFailureError)):
        raise errors[0] from group


def run(app: Callable[..., Awaitable[None]], config: ServerConfig | None = None) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down gracefully. For
    ``if __name__ == "__main__": run(app)``.

    It logs one line per listening address, with the ``ws://`` URLs of the app's routes
    (setting up logging in hypercorn's format, unless the program has set up its own);
    at the first signal, how many connections are closing. A second signal, or a shutdown
    that outlasts ``graceful_timeout``, ends the process at once (exit status 1), even if
    a view shields its cleanup from cancellation.

    An address that cannot be bound, or an app that fails to start, is one line on
    stderr and exit status 1 (:exc:`SystemExit`), not a traceback.
    """
    config = ServerConfig() if config is None else config
    if not logging.getLogger().handlers and not logging.getLogger("trio_bocaws").handlers:
        configure_logging(config.log_level)
    from hypercorn.utils import LifespanFailureError

    try:
        run_until_signalled(app, config)
    except LifespanFailureError as exc:
        print(f"trio_bocaws: error: the app failed to start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:
        binds = ", ".join(config.bind)
        print(
            f"trio_bocaws: error: cannot listen on {binds}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def run_until_signalled(app: Callable[..., Awaitable[None]], config: ServerConfig) -> None:
    """:func:`run` without its handling of errors (the command line reports them).

    Raises:
        OSError: An address cannot be bound (in use, say).
        hypercorn.utils.LifespanFailureError: The app failed to start.
    """
    try:
        trio.run(_serve_until_signalled, app, config)
    except BaseExceptionGroup as group:
        _raise_startup_error(group)
        raise


async def _serve_until_signalled(
    app: Callable[..., Awaitable[None]], config: ServerConfig
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def first_signal() -> None:
                await signals.__anext__()
                log_shutdown_start(again="Ctrl+C again")
                nursery.start_soon(force_after, config.graceful_timeout, signals.__anext__)

            async def serve_then_stop(task_status: trio.TaskStatus[list[str]]) -> None:
                await serve(app, config, shutdown_trigger=first_signal, task_status=task_status)
                nursery.cancel_scope.cancel()

            urls = await nursery.start(serve_then_stop)
            announce([re.sub(r"^ws", "http", url, count=1) for url in urls], app)
