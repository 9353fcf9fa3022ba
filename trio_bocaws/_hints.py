"""Messages for the mistakes people make, each naming the problem and the fix.

Kept apart from the code that detects them, so that the serving path stays short and the
wording lives in one place.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Final

import trio

__all__ = ["asyncio_hint", "running_under_trio", "wrong_server_message"]

# `module:attribute` as the command lines take it (hypercorn, uvicorn, ours).
_APP_PATH: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def running_under_trio() -> bool:
    """Whether this code runs inside ``trio.run`` (not asyncio's loop, say)."""
    return trio.lowlevel.in_trio_run()


def _app_path(argv: Sequence[str]) -> str:
    """The ``module:app`` the server was started with, from its command line, if it shows."""
    found = [argument for argument in argv[1:] if _APP_PATH.match(argument)]
    return found[-1] if found else "module:app"


def wrong_server_message(argv: Sequence[str] | None = None) -> str:
    """Why a trio_bocaws App cannot run on this server, and the command to run instead."""
    path = _app_path(sys.argv if argv is None else argv)
    return (
        "trio_bocaws runs on Trio, and this server runs asyncio (hypercorn's default "
        f"worker, or uvicorn): run `hypercorn --worker-class trio {path}` or "
        f"`python -m trio_bocaws {path}` instead"
    )


def asyncio_hint(error: BaseException) -> str | None:
    """A line to add when a view used asyncio under Trio (``asyncio.sleep``, say)."""
    if isinstance(error, RuntimeError) and "no running event loop" in str(error):
        return (
            "hint: this is asyncio's error: trio_bocaws views run on Trio; "
            "use trio.sleep() and Trio's APIs (or an anyio-based library), not asyncio's"
        )
    return None
