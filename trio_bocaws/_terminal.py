"""What trio_bocaws's runner (``python -m trio_bocaws``, :func:`trio_bocaws.run`) shows in
the terminal: one log format for its lines and hypercorn's, where to connect at startup,
and what a Ctrl+C does.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NoReturn

import trio

from ._shutdown import current_server_shutdown

__all__ = ["announce", "configure_logging", "force_after", "log_shutdown_start"]

logger = logging.getLogger("trio_bocaws")

# hypercorn's own format, so that its lines and ours read alike.
LOG_FORMAT: Final = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT: Final = "[%Y-%m-%d %H:%M:%S %z]"


class _WithoutHypercornsBanner(logging.Filter):
    """Our startup line replaces hypercorn's "Running on ..." (it adds the ws:// URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


_BANNER_FILTER: Final = _WithoutHypercornsBanner()


def configure_logging(level: str) -> None:
    """Log trio_bocaws's lines to stderr at ``level``, in hypercorn's format."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    ours = logging.getLogger("trio_bocaws")
    ours.handlers = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    # hypercorn sets its logger's handlers when it starts; a filter on the logger stays.
    hypercorns = logging.getLogger("hypercorn.error")
    if _BANNER_FILTER not in hypercorns.filters:
        hypercorns.addFilter(_BANNER_FILTER)


def announce(binds: Sequence[str], app: Any) -> None:
    """One line per listening address (hypercorn's ``http://...`` form): where to open the
    page, and the WebSocket URLs of the app's routes."""
    routes = [route.pattern for route in getattr(app, "routes", ())]
    for bind in binds:
        ws = re.sub(r"^http", "ws", bind, count=1)
        if routes:
            where = "WebSocket routes: " + ", ".join(ws + pattern for pattern in routes)
        else:
            where = f"WebSockets at {ws}"
        logger.info("Running on %s (CTRL + C to quit); %s", bind, where)


def log_shutdown_start(*, again: str | None, why: str = "Shutting down") -> None:
    """The line of the first Ctrl+C (or SIGTERM, or a --reload restart): how many
    connections are closing, and how to stop at once (``again``). Called from the server's
    shutdown trigger, which runs where the server's
    :class:`~trio_bocaws._shutdown.ServerShutdown` is current."""
    shutdown = current_server_shutdown()
    count = 0 if shutdown is None else len(shutdown)
    logger.info(
        "%s: closing %d WebSocket connection%s with 1001%s",
        why,
        count,
        "" if count == 1 else "s",
        "" if again is None else f" ({again} to stop at once)",
    )


async def force_after(
    graceful_timeout: float, next_signal: Callable[[], Awaitable[Any]]
) -> NoReturn:
    """Once a graceful shutdown has begun: end the process at the next signal, or when
    the shutdown outlasts ``graceful_timeout`` (hypercorn then cancels the views, but a
    view may shield its cleanup from that). Cancel this task when the shutdown is done.
    """
    # A second past hypercorn's own deadline, for its cancellation to work if it can.
    with trio.move_on_after(graceful_timeout + 1):
        await next_signal()
        exit_now("Second signal: stopping now, without waiting for open connections")
    exit_now(
        f"Still running {graceful_timeout:g}s after the shutdown began (graceful_timeout): "
        "stopping now"
    )


def exit_now(line: str) -> NoReturn:
    """Log ``line`` and end the process at once: a view that shields its cleanup cannot
    hold it, and no traceback follows."""
    logger.warning("%s", line)
    for handler in logging.getLogger("trio_bocaws").handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(1)
