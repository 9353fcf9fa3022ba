"""Tests that need a component from outside Python (redis-server, Chromium, CPython 2.7).

On a developer's machine a missing component skips the test with a reason that says how to
install it. In CI (``.ci/run`` sets ``TRIO_BOCAWS_CI=1``, after installing every component)
a missing component fails the test: a skip there would hide that it never ran.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("TRIO_BOCAWS_CI") == "1"


def require(available: bool, component: str, how_to_install: str) -> None:
    """Skip (locally) or fail (in CI) unless ``component`` is ``available``."""
    if available:
        return
    message = f"{component} is not available; {how_to_install}"
    if IN_CI:
        pytest.fail(f"{message} (TRIO_BOCAWS_CI=1: .ci/run should have installed it)")
    pytest.skip(message)
