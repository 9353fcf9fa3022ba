"""pytest fixtures for apps built on trio_bocaws, registered as the ``trio_bocaws`` plugin.

Installing trio_bocaws registers this plugin (entry point ``pytest11``). Define a fixture
named ``bocaws_app`` that returns the ASGI app under test, then use:

``bocaws_client``
    A :class:`trio_bocaws.testing.TestClient` for the app, in process, its lifespan running.
``bocaws_server``
    The app on a real hypercorn trio server at ``127.0.0.1:0``: a
    :class:`trio_bocaws.testing.Server` whose ``url`` is ``ws://127.0.0.1:PORT``. Connect
    with :func:`trio_bocaws.testing.open_websocket` (trio-websocket).

Both are async fixtures: they need pytest-trio (``trio_mode = true``, or mark the tests).
This module imports nothing of trio_bocaws until a fixture is used, so that merely having
trio_bocaws installed changes nothing in other projects' test runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from trio_bocaws.testing import Server, TestClient


@pytest.fixture
def bocaws_app() -> Any:
    """The ASGI app under test: override this fixture in your conftest.py."""
    pytest.fail(
        "define a fixture named `bocaws_app` that returns your ASGI app, to use "
        "`bocaws_client` or `bocaws_server`"
    )


@pytest.fixture
async def bocaws_client(bocaws_app: Any) -> AsyncIterator[TestClient]:
    """An in-process test client for ``bocaws_app``, with its lifespan running."""
    from trio_bocaws.testing import TestClient

    async with TestClient(bocaws_app) as client:
        yield client


@pytest.fixture
async def bocaws_server(bocaws_app: Any) -> AsyncIterator[Server]:
    """``bocaws_app`` on a real hypercorn trio server at ``127.0.0.1:0``."""
    from trio_bocaws.testing import serving

    async with serving(bocaws_app) as server:
        yield server
