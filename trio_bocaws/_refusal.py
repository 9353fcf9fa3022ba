"""Refusing a WebSocket handshake with an HTTP response.

Used by :meth:`WebSocket.reject <trio_bocaws.WebSocket.reject>`, and by the App's admission
(connection cap, Origin, route) to refuse a handshake without building a WebSocket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from ._validation import HeadersLike, validate_accept_headers

__all__ = ["Refusal", "refusal_events", "send_refusal"]


@attrs.frozen
class Refusal:
    """An HTTP answer to a handshake: ``status``, ``body`` (text is sent as UTF-8), and
    extra ``headers``; ``cause``, the ``reason`` of ``trio_bocaws.handshakes.refused``."""

    status: int
    body: str | bytes = b""
    headers: HeadersLike | None = None
    cause: str = attrs.field(default="view", kw_only=True)


def refusal_events(scope: Mapping[str, Any], refusal: Refusal) -> list[dict[str, Any]]:
    """The ASGI events that refuse the handshake of ``scope``.

    With the ``websocket.http.response`` extension (hypercorn has it), the status, headers
    and body; without it a close before accept, which ASGI servers answer with 403.

    Raises:
        ValueError: A header is invalid.
    """
    body = refusal.body
    payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    extra = validate_accept_headers(refusal.headers)
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        return [{"type": "websocket.close", "code": 1008}]
    headers = [(b"content-length", str(len(payload)).encode("ascii"))]
    if payload and not any(name == b"content-type" for name, _ in extra):
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    return [
        {
            "type": "websocket.http.response.start",
            "status": refusal.status,
            "headers": headers + extra,
        },
        {"type": "websocket.http.response.body", "body": payload},
    ]


async def send_refusal(
    scope: Mapping[str, Any],
    receive: Callable[[], Awaitable[Any]],
    send: Callable[[Any], Awaitable[None]],
    refusal: Refusal,
) -> None:
    """Take the ``websocket.connect`` event and refuse the handshake; quietly give up if
    the client has already gone."""
    event = await receive()
    if event["type"] != "websocket.connect":
        return  # websocket.disconnect: nobody left to answer
    try:
        for message in refusal_events(scope, refusal):
            await send(message)
    except OSError:
        pass  # the client gave up first (ASGI 2.4)
