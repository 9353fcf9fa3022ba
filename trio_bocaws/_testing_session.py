"""The test's end of one in-process WebSocket connection (:class:`WebSocketSession`), and
the errors it raises: the ASGI messages the app sends become what a client would see."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import trio

# hypercorn's max_app_queue_size: how many events wait for the app's receive().
_APP_QUEUE_SIZE: Final = 10


class HandshakeRejected(Exception):
    """The app refused the handshake: what an HTTP client would have received.

    Attributes:
        status: The HTTP status (403 for a close before accept, 500 when the app ended
            without answering).
        headers: Response headers, as ``(name, value)`` byte pairs.
        body: The response body.
    """

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(status, headers, body)
        self.status = status
        self.headers = headers
        self.body = body

    def __str__(self) -> str:
        return f"handshake refused with HTTP {self.status}" + (
            f": {self.body.decode('utf-8', 'replace')}" if self.body else ""
        )


class ConnectionClosed(Exception):
    """The app closed the connection (or it ended); raised by the session's receive and
    send methods.

    Attributes:
        code: The close code the app sent (1011 if it returned without closing).
        reason: The close reason.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"connection closed by the app with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


class WebSocketSession:
    """The client's end of one WebSocket connection made by :class:`TestClient`."""

    def __init__(self, offered: Sequence[str], timeout: float) -> None:
        self._offered = list(offered)
        self._timeout = timeout
        self._to_app, self._app_inbox = trio.open_memory_channel[dict[str, Any]](_APP_QUEUE_SIZE)
        self._from_app, self._inbox = trio.open_memory_channel[dict[str, Any]](math.inf)
        self._answered = trio.Event()
        self._accepted = False
        self._rejection: HandshakeRejected | None = None
        self._response_start: dict[str, Any] | None = None
        self._response_body = bytearray()
        self._server_close: tuple[int, str] | None = None
        self._client_closed = False
        self.subprotocol: str | None = None
        """The subprotocol the app accepted."""
        self.accept_headers: list[tuple[bytes, bytes]] = []
        """Extra headers the app sent with its accept."""

    # -- The ASGI side: what the app calls ------------------------------------------------

    async def _app_receive(self) -> dict[str, Any]:
        return await self._app_inbox.receive()

    async def _app_send(self, message: Any) -> None:
        await trio.lowlevel.checkpoint()
        if self._server_close is not None or self._rejection is not None or self._client_closed:
            return  # as hypercorn does once the stream is closed
        kind = message["type"]
        if not self._answered.is_set():
            self._handshake_message(kind, message)
        elif kind == "websocket.send":
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("websocket.send needs exactly one of 'text' and 'bytes'")
            self._from_app.send_nowait({"text": text, "bytes": data})
        elif kind == "websocket.close":
            self._server_close = (int(message.get("code", 1000)), message.get("reason") or "")
            self._from_app.close()
            # The server answers the client's echo of the close with a disconnect: 1000.
            self._to_app.send_nowait({"type": "websocket.disconnect", "code": 1000})
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after the handshake")

    def _handshake_message(self, kind: str, message: Mapping[str, Any]) -> None:
        if kind == "websocket.accept":
            subprotocol = message.get("subprotocol")
            if subprotocol is not None and subprotocol not in self._offered:
                # hypercorn crashes the whole server on this.
                raise RuntimeError(f"the app accepted subprotocol {subprotocol!r}, not offered")
            self._accepted = True
            self.subprotocol = subprotocol
            self.accept_headers = list(message.get("headers") or [])
            self._answered.set()
        elif kind == "websocket.close":
            self._reject(403, [], b"")  # hypercorn drops the code and reason
        elif kind == "websocket.http.response.start":
            self._response_start = dict(message)
        elif kind == "websocket.http.response.body" and self._response_start is not None:
            self._response_body += message.get("body", b"")
            if not message.get("more_body", False):
                start = self._response_start
                self._reject(
                    int(start["status"]),
                    list(start.get("headers") or []),
                    bytes(self._response_body),
                )
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} during the handshake")

    def _reject(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self._rejection = HandshakeRejected(status, headers, body)
        self._answered.set()

    def _app_finished(self) -> None:
        """The app returned (or raised): answer as hypercorn would for what it left open."""
        if not self._answered.is_set():
            self._reject(500, [], b"")
        elif self._accepted and self._server_close is None and not self._client_closed:
            self._server_close = (1011, "")
            self._from_app.close()
        elif self._server_close is None:
            self._from_app.close()

    # -- The test's side ------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else timeout

    async def _next(self, timeout: float | None) -> dict[str, Any]:
        limit = self._deadline(timeout)
        try:
            with trio.fail_after(limit):
                return await self._inbox.receive()
        except trio.EndOfChannel:
            code, reason = self._server_close or (1006, "")
            raise ConnectionClosed(code, reason) from None
        except trio.TooSlowError:
            raise trio.TooSlowError(f"no message from the app within {limit}s") from None

    async def receive(self, *, timeout: float | None = None) -> str | bytes:
        """The next message the app sent, text or bytes.

        Raises:
            ConnectionClosed: The app closed the connection.
            trio.TooSlowError: Nothing arrived within the timeout.
        """
        message = await self._next(timeout)
        payload: str | bytes = message["text"] if message["text"] is not None else message["bytes"]
        return payload

    async def receive_text(self, *, timeout: float | None = None) -> str:
        """The next message, which must be text."""
        message = await self._next(timeout)
        if message["text"] is None:
            raise TypeError(f"expected a text message, the app sent bytes: {message['bytes']!r}")
        text: str = message["text"]
        return text

    async def receive_bytes(self, *, timeout: float | None = None) -> bytes:
        """The next message, which must be binary."""
        message = await self._next(timeout)
        if message["bytes"] is None:
            raise TypeError(f"expected a binary message, the app sent text: {message['text']!r}")
        data: bytes = message["bytes"]
        return data

    async def receive_json(self, *, timeout: float | None = None) -> Any:
        """The next message, parsed as JSON (text or binary)."""
        return json.loads(await self.receive(timeout=timeout))

    async def _send(self, event: dict[str, Any], timeout: float | None) -> None:
        if self._server_close is not None:
            raise ConnectionClosed(*self._server_close)
        if self._client_closed:
            raise RuntimeError("this session was closed by the test")
        limit = self._deadline(timeout)
        try:
            with trio.fail_after(limit):
                # Bounded as hypercorn's queue is: an app that does not receive slows us.
                await self._to_app.send(event)
        except trio.TooSlowError:
            raise trio.TooSlowError(
                f"the app did not take the message within {limit}s "
                f"({_APP_QUEUE_SIZE} are already waiting for its receive())"
            ) from None

    async def send_text(self, data: str, *, timeout: float | None = None) -> None:
        """Send a text message to the app."""
        await self._send({"type": "websocket.receive", "text": data, "bytes": None}, timeout)

    async def send_bytes(self, data: bytes, *, timeout: float | None = None) -> None:
        """Send a binary message to the app."""
        await self._send({"type": "websocket.receive", "bytes": data, "text": None}, timeout)

    async def send_json(self, data: Any, *, timeout: float | None = None) -> None:
        """Send ``data`` as a JSON text message."""
        await self.send_text(json.dumps(data), timeout=timeout)

    async def close(
        self, code: int = 1000, reason: str = "", *, timeout: float | None = None
    ) -> None:
        """Close from the client's side: the app receives ``code`` and ``reason``."""
        if self._client_closed or self._server_close is not None:
            return
        self._client_closed = True
        with trio.fail_after(self._deadline(timeout)):
            await self._to_app.send(
                {"type": "websocket.disconnect", "code": code, "reason": reason}
            )

    @property
    def close_code(self) -> int | None:
        """The code the app closed with, once it has."""
        return None if self._server_close is None else self._server_close[0]

    @property
    def close_reason(self) -> str | None:
        """The reason the app closed with, once it has."""
        return None if self._server_close is None else self._server_close[1]
