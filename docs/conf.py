"""Sphinx configuration for the trio_bocaws documentation.

Build (warnings are errors, every cross-reference must resolve)::

    sphinx-build -n -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

project = "trio_bocaws"
author = "The trio_bocaws developers"
copyright = "The trio_bocaws developers"
release = importlib.metadata.version("trio-bocaws")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_inventories", "snippets"]
nitpicky = True

# -- MyST ---------------------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc and napoleon ----------------------------------------------------------------

autodoc_member_order = "bysource"
# The pytest plugin's module is documented by its docstring; pytest itself need not be
# installed to build the docs.
autodoc_mock_imports = ["pytest"]
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
python_maximum_signature_line_length = 88
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- intersphinx -------------------------------------------------------------------------
#
# Only PyPI is reachable where these docs are built (CI included), so the usual
# `objects.inv` files of docs.python.org, trio.readthedocs.io, www.attrs.org and
# multidict.aio-libs.org cannot be downloaded. Each project below is given a small local
# inventory instead (docs/_inventories/*.txt, Sphinx's plain-text inventory format 1: one
# "name type page" line per object, anchor = name). Links still point at the real
# documentation sites. Every entry was checked against the project's own documentation
# source: CPython 3.11's objects.inv (Debian's python3.11-doc), and the docs/ directories of
# the trio 0.35.0, attrs 26.1.0 and multidict 7.2.1 sdists on PyPI. A reference to an
# object missing from these lists fails the build (-n -W): add one line for it.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python.txt"),
    "trio": ("https://trio.readthedocs.io/en/stable", "_inventories/trio.txt"),
    "attrs": ("https://www.attrs.org/en/stable", "_inventories/attrs.txt"),
    "multidict": ("https://multidict.aio-libs.org/en/stable", "_inventories/multidict.txt"),
}

# Some classes report a private module (`multidict._multidict.CIMultiDictProxy`): their
# references are looked up under the public name the project documents them by.
_PUBLIC_NAMES = {"multidict._multidict.": "multidict."}

# Names that appear in signatures but have no page to link to.
nitpick_ignore = [
    # TypeVars of App's decorators (a decorator returns what it was given).
    ("py:class", "trio_bocaws._app.C"),
    ("py:class", "trio_bocaws._app.V"),
    ("py:class", "trio_bocaws._endpoint.F"),
    # cattrs's converters, in the signatures of typed messages: no local inventory of
    # cattrs's documentation yet (see above), and the docs name them in prose.
    ("py:class", "cattrs.converters.BaseConverter"),
    ("py:class", "cattrs.converters.Converter"),
    # The ASGI callables' aliases, in a signature whose hints cannot be evaluated at run time
    # (WebSocket.from_config returns `Self`, imported only for type checkers).
    ("py:class", "Receive"),
    ("py:class", "Send"),
    # Private types in the fields of attrs classes (AppConfig converts strings to
    # OriginPattern; WebSocketRoute's constructor is internal, see WebSocketRoute.create).
    ("py:class", "trio_bocaws._origins.OriginPattern"),
    # What a PresenceWatch reads from (a room's subscription); rooms make watches, users do not.
    ("py:class", "trio_bocaws._room_presence._Messages"),
    ("py:class", "trio_bocaws._routing._QueryParameter"),
    ("py:class", "re.Pattern"),
    # Subscription's constructor takes the hub's private receiver (see Broadcast.subscribe),
    # Room's the hub as the room sees it (see Broadcast.room): users make neither.
    ("py:class", "trio_bocaws._pubsub.Receiver"),
    ("py:class", "trio_bocaws._room.RoomHub"),
    # hypercorn's documentation has no API reference to link to.
    ("py:func", "hypercorn.trio.serve"),
    ("py:class", "hypercorn.config.Config"),
    ("py:exc", "hypercorn.utils.LifespanFailureError"),
]

# -- HTML --------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"trio_bocaws {release}"

# -- A napoleon detail -------------------------------------------------------------------
#
# For attributes and properties, napoleon (Google style) reads a first line "X: text" as
# "type X, described by text". trio_bocaws takes types from annotations and never writes
# that form, but some of its docstrings open with prose such as "The handshake's headers:
# read-only, ...". An empty reST comment put ahead of such a line keeps it prose.


def _keep_prose_first_line(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what in ("attribute", "property", "data") and lines and ":" in lines[0]:
        lines[:0] = ["..", ""]


def _drop_type_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # A constant without a docstring of its own is otherwise shown with its type's
    # (frozenset's, say), which says nothing about the constant.
    import inspect

    type_doc = inspect.getdoc(type(obj)) or ""
    if what == "data" and lines and lines[0].strip() == type_doc.partition("\n")[0].strip():
        lines.clear()


def _resolve_public_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    from sphinx.ext import intersphinx

    target = node.get("reftarget", "")
    for private, public in _PUBLIC_NAMES.items():
        if target.startswith(private):
            node["reftarget"] = public + target[len(private) :]
            return intersphinx.missing_reference(app, env, node, contnode)
    return None


def setup(app: Any) -> None:
    # Before napoleon's own handler (priority 500).
    app.connect("autodoc-process-docstring", _keep_prose_first_line, priority=400)
    app.connect("autodoc-process-docstring", _drop_type_docstring, priority=300)
    # Before intersphinx's own handler (priority 500).
    app.connect("missing-reference", _resolve_public_name, priority=400)
