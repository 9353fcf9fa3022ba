"""Messages for the mistakes people make, each naming the problem and the fix.

Kept apart from the code that detects them, so that the serving path stays short and the
wording lives in one place.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Final

import trio

__all__ = [
    "apps_in",
    "asyncio_hint",
    "missing_attribute_hint",
    "not_an_asgi_app",
    "path_hint",
    "running_under_trio",
    "wrong_server_message",
]

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


def path_hint(module_name: str, attribute: str) -> str:
    """ "did you mean ...?" for an app path written as a file (``echo.py:app``,
    ``examples/echo.py:app``), or ``""``."""
    stem = module_name.removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
    if stem != module_name and all(part.isidentifier() for part in stem.split(".")):
        return f" (did you mean {stem}:{attribute}? the app is given as module:attribute)"
    return ""


def apps_in(module: ModuleType) -> list[str]:
    """The names of the trio_bocaws Apps a module holds."""
    # By the class's name, not isinstance: _app imports this module.
    return [
        name
        for name, value in vars(module).items()
        if any(
            (kind.__module__, kind.__qualname__) == ("trio_bocaws._app", "App")
            for kind in type(value).__mro__
        )
    ]


def missing_attribute_hint(module: ModuleType, module_name: str, attribute: str) -> str:
    """ "did you mean ...?" for an attribute a module lacks: a submodule of that name
    that holds it (``chat:app`` for ``chat/app.py``), or the module's Apps."""
    if hasattr(module, "__path__"):  # a package
        submodule = f"{module_name}.{attribute}"
        try:
            found = importlib.util.find_spec(submodule) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return f" (did you mean {submodule}:app? {module_name!r} is a package)"
    names = apps_in(module)
    if names:
        return " (did you mean " + " or ".join(f"{module_name}:{n}" for n in names) + "?)"
    return ""


def not_an_asgi_app(path: str, app: Any, module: ModuleType, module_name: str) -> str | None:
    """Why ``app`` cannot be an ASGI app (it cannot take scope, receive and send), with
    the fix; ``None`` when it can."""
    try:
        inspect.signature(app).bind(None, None, None)
    except TypeError:
        pass
    except ValueError:  # no signature to read (a builtin): let the server find out
        return None
    else:
        return None
    names = apps_in(module)
    fix = (
        "serve the App it is registered on: " + " or ".join(f"{module_name}:{n}" for n in names)
        if names
        else "serve the App, as module:attribute"
    )
    return (
        f"{path!r} is not an ASGI app (it cannot take scope, receive and send); "
        f"a WebSocket view? {fix}"
    )
