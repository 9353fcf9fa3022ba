"""One record per change to hypercorn, and the loop that applies and removes them.

Each :class:`Patch` names the attribute it replaces and carries a fingerprint of the code
it was written for: a hash of ``inspect.getsource`` of hypercorn's original, one per
hypercorn version we verified. A patch whose target's code differs from every fingerprint
is not applied, whatever the version number says, so a release that keeps the code keeps
its fix, and one that changed it loses only the fixes that depended on it.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

__all__ = ["Applied", "Patch", "fingerprint"]


@attrs.frozen
class Patch:
    """One change to hypercorn (or to what hypercorn uses).

    Attributes:
        name: A short name, as the warning and the docs use it.
        module: The module that holds the target (``"hypercorn.protocol.ws_stream"``).
        owner: The class in ``module`` whose attribute is replaced, or ``""`` for an
            attribute of the module itself.
        attribute: The name of the replaced attribute.
        replace: Given hypercorn's original, returns its replacement.
        why: What goes wrong without it.
        upstream: The upstream issue, or ``""`` where none was filed.
        checked_by: The tests that show the fix, and that fail without it.
        written_for: The fingerprint (:func:`fingerprint`) of the code the patch was
            written for, by hypercorn version.
        depends_on: ``module:qualified.name`` of other code whose behaviour the patch
            relies on and whose source goes into its fingerprint; for a target that is
            not hypercorn's own code (a class it imports), only these are fingerprinted.
    """

    name: str
    module: str
    owner: str
    attribute: str
    replace: Callable[[Any], Any] = attrs.field(repr=False)
    why: str = attrs.field(repr=False)
    upstream: str = attrs.field(repr=False)
    checked_by: tuple[str, ...] = attrs.field(repr=False)
    written_for: Mapping[str, str] = attrs.field(repr=False)
    depends_on: tuple[str, ...] = attrs.field(default=(), repr=False)
    fingerprint_target: bool = attrs.field(default=True, repr=False)

    @property
    def target(self) -> str:
        """``module:Owner.attribute``, for messages."""
        owner = f"{self.owner}." if self.owner else ""
        return f"{self.module}:{owner}{self.attribute}"

    def holder(self) -> Any:
        """The module or class whose attribute this patch replaces."""
        module = importlib.import_module(self.module)
        return getattr(module, self.owner) if self.owner else module

    def current(self) -> Any:
        """The attribute as it is now (as stored on its holder: no descriptor binding)."""
        holder = self.holder()
        if isinstance(holder, type):
            return holder.__dict__[self.attribute]
        return getattr(holder, self.attribute)

    def matches(self, original: Any) -> bool:
        """Whether ``original`` is code this patch was written for."""
        sources = [original] if self.fingerprint_target else []
        sources += [_resolve(path) for path in self.depends_on]
        return fingerprint(sources) in self.written_for.values()


@attrs.frozen
class Applied:
    """A patch in place, and the original it replaced."""

    patch: Patch
    original: Any


def _resolve(path: str) -> Any:
    module_name, _, qualified = path.partition(":")
    found: Any = importlib.import_module(module_name)
    for name in qualified.split("."):
        found = getattr(found, name)
    return found


def fingerprint(sources: Iterable[Any]) -> str:
    """A short hash of the source code of each of ``sources`` (functions or classes)."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(inspect.getsource(inspect.unwrap(source)).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
