"""An in-memory ASGI server side for unit tests of the WebSocket state machine."""

from __future__ import annotations

from typing import Any

import trio

from trio_bocaws import WebSocket
from trio_bocaws._stream_status import EXTENSION, StreamClosedError, StreamStatus


def make_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": "/chat/lobby",
        "raw_path": b"/chat/lobby",
        "query_string": b"user=ada&tag=a&tag=b",
        "root_path": "",
        "headers": [
            (b"host", b"example.com:8000"),
            (b"origin", b"http://example.com:8000"),
            (b"x-multi", b"one"),
            (b"x-multi", b"two"),
        ],
        "client": ("10.0.0.7", 51000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": ["chat.v1", "chat.v2"],
        "extensions": {"websocket.http.response": {}},
    }
    scope.update(overrides)
    return scope


class FakeServer:
    """Feeds events to the app and records what it sends, like an ASGI server would.

    By default it reports closes as trio_bocaws's hypercorn adapter does (the stream-status
    extension, and sends on a closed stream raise); with ``reports_closes=False`` it is a
    plain ASGI server that drops them.
    """

    def __init__(
        self,
        buffer: int = 100,
        *,
        send_blocks_on: str | None = None,
        reports_closes: bool = True,
    ) -> None:
        self.status = StreamStatus() if reports_closes else None
        self._to_app, self._app_inbox = trio.open_memory_channel[dict[str, Any]](buffer)
        self.sent: list[dict[str, Any]] = []
        self.send_blocks_on = send_blocks_on
        self.send_raises: BaseException | None = None
        self._to_app.send_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        return await self._app_inbox.receive()

    async def send(self, message: Any) -> None:
        await trio.lowlevel.checkpoint()
        if self.send_raises is not None:
            raise self.send_raises
        if self.status is not None and self.status.close is not None:
            raise StreamClosedError("the client has closed the stream")
        if message["type"] == self.send_blocks_on:
            await trio.sleep_forever()
        self.sent.append(message)

    def client_sends(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self._to_app.send_nowait({"type": "websocket.receive", "text": data, "bytes": None})
        else:
            self._to_app.send_nowait({"type": "websocket.receive", "bytes": data, "text": None})

    def client_closes(self, code: int = 1000, reason: str = "") -> None:
        if self.status is not None:
            self.status.close = (code, reason)
        self._to_app.send_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    @property
    def pending(self) -> int:
        """Events the app has not taken yet."""
        return self._app_inbox.statistics().current_buffer_used

    @property
    def types_sent(self) -> list[str]:
        return [message["type"] for message in self.sent]

    @property
    def close_sent(self) -> tuple[int, str] | None:
        for message in self.sent:
            if message["type"] == "websocket.close":
                return message.get("code", 1000), message.get("reason", "")
        return None

    def scope(self, **overrides: Any) -> dict[str, Any]:
        """A scope that carries this server's extensions."""
        scope = make_scope(**overrides)
        if self.status is not None:
            scope["extensions"] = {**scope["extensions"], EXTENSION: self.status}
        return scope

    def websocket(self, scope: dict[str, Any] | None = None, **options: Any) -> WebSocket:
        return WebSocket(scope or self.scope(), self.receive, self.send, **options)
