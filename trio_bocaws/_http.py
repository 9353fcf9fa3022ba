"""The one bit of HTTP a WebSocket app usually needs: the page that opens the socket."""

from __future__ import annotations

from typing import Any

__all__ = ["HTMLPage"]


class HTMLPage:
    """An ASGI app that serves one HTML page at ``path`` (GET and HEAD); 404 elsewhere.

    Give it to :class:`~trio_bocaws.App` as ``http_app`` to serve the page of a chat, a
    dashboard or a demo from the process that serves its WebSocket.
    """

    def __init__(self, html: str | bytes, *, path: str = "/") -> None:
        self._body = html.encode("utf-8") if isinstance(html, str) else bytes(html)
        self._path = path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != self._path:
            status, body, kind = 404, b"Not Found", b"text/plain; charset=utf-8"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, kind = 405, b"Method Not Allowed", b"text/plain; charset=utf-8"
        else:
            status, body, kind = 200, self._body, b"text/html; charset=utf-8"
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
