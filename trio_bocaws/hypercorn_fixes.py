"""Small, switchable fixes to hypercorn's trio worker, checked against the code they fix.

Importing :mod:`trio_bocaws` installs them, so they apply under
``hypercorn --worker-class trio module:app`` (the worker imports your module, which imports
trio_bocaws) as well as under :func:`trio_bocaws.serve` and :func:`hypercorn.trio.serve`.
Each is one record of ``trio_bocaws._hypercorn.PATCHES`` (what it replaces, why, the
upstream issue, the tests that check it):

1. **The client's close code reaches the app.** hypercorn answers the client's close frame
   but reports ``websocket.disconnect`` with code 1006 and no reason, whatever the client
   sent (https://github.com/pgjones/hypercorn/issues/127). With the fix the app receives
   the client's code and reason (1005 for a close frame without a code), and 1009 when
   hypercorn closed the connection because a message was over
   ``websocket_max_message_size``. Every WebSocket scope carries a
   ``StreamStatus`` (in ``scope["extensions"]``, see ``trio_bocaws._stream_status``) that holds
   that close from the moment the server processed it, before the app reads it.
2. **A send after the client left raises.** hypercorn drops such a send without yielding
   to the scheduler, so a loop that only sends spins forever once the client has gone,
   starving every other task in the worker. With the fix the send raises
   ``StreamClosedError``, an :class:`OSError`, as
   ASGI 2.4 allows.
3. **Open WebSockets hear of a shutdown when it starts**, and in command-line workers
   SIGTERM starts the graceful shutdown (trio_bocaws's worker wrapper, which
   ``python -m trio_bocaws`` and :func:`trio_bocaws.serve` use directly).
4. **A close racing a send no longer crashes the server.** hypercorn's ``send_eof`` holds
   the stream across a checkpoint, and a send racing it failed with ``BusyResourceError``.
5. **A client that stops reading cannot hold a connection (or a shutdown) forever.**
   ``TCP_USER_TIMEOUT`` (Linux) on every accepted connection, :data:`DEFAULT_WRITE_TIMEOUT`
   seconds (``write_timeout`` of :class:`~trio_bocaws.ServerConfig`; under hypercorn's
   command line, ``trio_bocaws_write_timeout`` in its configuration file).
6. **An oversized message ends the connection** with 1009, also when the client's close
   arrives in the same read; the size of a text message is counted in UTF-8 bytes, as for
   binary, not in characters.
7. **A closed connection's ping task ends with it.**
8. **A frame the server cannot accept is answered with a close frame** (1007, 1002).
9. **One connection's error stays in that connection.** An exception while serving one
   connection is logged once (with the peer's address) and closes that connection; the
   others and the worker go on. DATA on an HTTP/2 stream hypercorn has already dropped is
   acknowledged and the stream reset, where hypercorn raised ``KeyError``.
10. **WebSockets over HTTP/2 (RFC 8441) keep the same promises.** What a stream sends is
    bounded (hypercorn's buffer grew without limit for a client that stopped reading one
    stream); the write timeout applies to each stream (one whose flow-control window
    stays shut that long is reset, and its app sees 1006); a WebSocket that ends is ended
    on both sides of its stream (else after 100 of them a connection could open no more);
    at shutdown every stream of a shared connection gets its 1001 before the connection
    is closed; and with ``h2`` not among hypercorn's ``alpn_protocols``
    (``ServerConfig(http2=False)``) the plain port refuses HTTP/2 as well.

Each fix checks that the code it replaces is the code it was written for (a fingerprint
of its source, per hypercorn version in :data:`VERIFIED_VERSIONS`). On another hypercorn,
a fix whose target changed is left out, and a :class:`HypercornCompatibilityWarning` names
the version and what is lost, once.

To keep hypercorn exactly as it is, set the environment variable
``TRIO_BOCAWS_HYPERCORN_FIXES=0`` before importing trio_bocaws, or call :func:`uninstall`.
"""

from __future__ import annotations

import os
from typing import Final

from . import _hypercorn
from ._hypercorn import HypercornCompatibilityWarning, installed, uninstall
from ._hypercorn._worker import DEFAULT_WRITE_TIMEOUT as _DEFAULT_WRITE_TIMEOUT
from ._hypercorn._worker import WRITE_TIMEOUT_OPTION as _WRITE_TIMEOUT_OPTION

__all__ = [
    "DEFAULT_WRITE_TIMEOUT",
    "ENVIRONMENT_VARIABLE",
    "VERIFIED_VERSIONS",
    "WRITE_TIMEOUT_OPTION",
    "HypercornCompatibilityWarning",
    "install",
    "installed",
    "uninstall",
]

ENVIRONMENT_VARIABLE: Final = "TRIO_BOCAWS_HYPERCORN_FIXES"
"""Set to ``0`` to stop ``import trio_bocaws`` from installing the fixes."""

VERIFIED_VERSIONS: Final = _hypercorn.VERIFIED_VERSIONS
"""hypercorn releases whose code these fixes were written for and tested on (each fix
also checks its target's code, so another release keeps the fixes whose code it kept)."""

DEFAULT_WRITE_TIMEOUT: Final = _DEFAULT_WRITE_TIMEOUT
"""Seconds a connection may leave sent data unacknowledged (a client not reading) before
the kernel drops it (fix 5). Long enough for a stalled mobile network to recover."""

WRITE_TIMEOUT_OPTION: Final = _WRITE_TIMEOUT_OPTION
"""The key of a hypercorn configuration file (``hypercorn --config``) that sets the write
timeout under hypercorn's own command line (``None``: off)."""

HypercornCompatibilityWarning.__module__ = __name__  # where users import it from


def install() -> bool:
    """Install every fix whose target is the code it was written for (once).

    Returns:
        Whether every fix is in place (also when they already were).
    """
    return _hypercorn.install()


def install_unless_disabled() -> None:
    """What ``import trio_bocaws`` runs: install unless the environment says not to."""
    if os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower() in {"0", "false", "no", "off"}:
        return
    _hypercorn.install()
