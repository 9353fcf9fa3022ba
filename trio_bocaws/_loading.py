"""The app of a command line: ``module:attribute`` imported, or one line that says what
is wrong with it (for ``python -m trio_bocaws`` and the children of its ``--reload``)."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import types
from collections.abc import Awaitable, Callable
from typing import Any

from ._hints import missing_attribute_hint, not_an_asgi_app, path_hint

__all__ = ["PROGRAM", "UsageError", "import_failure", "load_app", "shown"]

PROGRAM = "trio-bocaws"


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


def load_app(path: str, *, check_asgi: bool = True) -> Callable[..., Awaitable[None]]:
    """Import ``module:attribute`` (the working directory is importable, as for hypercorn).

    Raises:
        UsageError: The path is malformed, or names a module or attribute that is not there.
    """
    module_name, _, attribute = path.partition(":")
    attribute = attribute or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise UsageError(
            f"app must be given as module:attribute, not {path!r}"
            + path_hint(module_name, attribute)
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(
                f"cannot import {module_name!r}: no module named {exc.name!r}"
                + path_hint(module_name, attribute)
            ) from None
        raise  # a module it imports is missing: the user's traceback says more
    app: Any = module
    for name in attribute.split("."):
        try:
            app = getattr(app, name)
        except AttributeError:
            raise UsageError(
                f"module {module_name!r} has no attribute {attribute!r}"
                + missing_attribute_hint(module, module_name, attribute)
            ) from None
    if isinstance(app, types.ModuleType):
        raise UsageError(
            f"{path!r} is a module, not an ASGI app (did you mean {app.__name__}:app?)"
        )
    if not callable(app):
        raise UsageError(f"{path!r} is not an ASGI app (not callable)")
    refusal = not_an_asgi_app(path, app, module, module_name) if check_asgi else None
    if refusal is not None:
        raise UsageError(refusal)
    loaded: Callable[..., Awaitable[None]] = app
    return loaded


def import_failure(path: str, exc: BaseException) -> str:
    """What to print when importing the app ``path`` raised ``exc``: a syntax error in one
    line, anything else as its traceback from the user's own code on (the frames of the
    runner and of the import machinery above it say nothing about the mistake)."""
    if isinstance(exc, SyntaxError):
        where = f"{shown(exc.filename)}, line {exc.lineno}" if exc.filename else "the app"
        return f"{PROGRAM}: error: {where}: {type(exc).__name__}: {exc.msg}\n"
    ours = os.path.dirname(os.path.abspath(__file__))
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename.startswith((ours, "<frozen importlib"))
        or "importlib" in tb.tb_frame.f_code.co_filename
    ):
        tb = tb.tb_next
    shown_traceback = "".join(traceback.format_exception(type(exc), exc, tb))
    return f"{PROGRAM}: error: cannot import {path!r}:\n{shown_traceback}"


def shown(path: str) -> str:
    """``path`` relative to the working directory when it is below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative
