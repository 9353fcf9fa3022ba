"""Testing WebSocket apps: an in-process client, and helpers for a real server.

:class:`TestClient` runs an ASGI app in the test's own Trio run, with no network and no
threads, and answers like hypercorn's trio worker where a test would notice: a close before
``accept`` is a refused handshake (HTTP 403), a ``websocket.http.response`` denial arrives
with its status, headers and body, the client's close code reaches the app, and an app that
returns without closing gives 1011 after ``accept`` (HTTP 500 before). Every call has a
timeout, so a test never hangs.

::

    from trio_bocaws.testing import TestClient

    async def test_echo():
        async with TestClient(app) as client:  # runs the app's lifespan
            async with client.websocket_connect("/echo") as ws:
                await ws.send_text("hi")
                assert await ws.receive_text() == "hi"

For tests against a real server, :func:`serving` runs hypercorn's trio worker on
``127.0.0.1:0`` and :func:`open_websocket` connects trio-websocket to it. The pytest plugin
(installed with trio_bocaws) wraps both in fixtures: see :mod:`trio_bocaws_pytest`.
"""

from __future__ import annotations

# DEFAULT_TIMEOUT, ASGIApp, HeaderPairs and logger were module-level names of this module
# before it was split: still here for those who use them.
from ._testing_client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._testing_client import HeaderPairs as HeaderPairs
from ._testing_client import TestClient as TestClient
from ._testing_client import logger as logger
from ._testing_lifespan import ASGIApp as ASGIApp
from ._testing_server import Server as Server
from ._testing_server import open_websocket as open_websocket
from ._testing_server import serving as serving
from ._testing_server import start_server as start_server
from ._testing_session import ConnectionClosed as ConnectionClosed
from ._testing_session import HandshakeRejected as HandshakeRejected
from ._testing_session import WebSocketSession as WebSocketSession

__all__ = [
    "ConnectionClosed",
    "HandshakeRejected",
    "Server",
    "TestClient",
    "WebSocketSession",
    "open_websocket",
    "serving",
    "start_server",
]
