"""The app under fuzz: trio_bocaws views of every kind a client can meet.

Each route answers differently at the edges the fuzzer probes: one echoes, one closes
before the client does (so the client's answer to the close arrives on a stream the
server may have dropped), one parses JSON, one refuses every handshake, one sends before
it reads. The Origin check is on and handshakes without an ``Origin`` are refused, so a
refused handshake (HTTP 403) is as common as an accepted one.
"""

from __future__ import annotations

from typing import Any, Final

from trio_bocaws import App, AppConfig, RejectConnection, WebSocket

__all__ = ["ALLOWED_ORIGIN", "PATHS", "make_app"]

ALLOWED_ORIGIN: Final = "https://good.example"

#: Every path a fuzz session may ask for (the last ones are no route: HTTP 404).
PATHS: Final = (
    "/echo",
    "/close-first",
    "/json",
    "/reject",
    "/stream",
    "/missing",
    "/echo?q=%ff%00",
)


def _refuse(ws: WebSocket) -> Any:
    raise RejectConnection(403, "this route refuses every handshake")


def make_app() -> App:
    """A fresh app (each server of a fuzz target gets its own)."""
    app = App(config=AppConfig(allowed_origins=[ALLOWED_ORIGIN], allow_missing_origin=False))

    # caught_close_codes=all: a fuzz client closes with every code; the log keeps to
    # what is not the client's business.
    @app.websocket_route("/echo", value_type="event", caught_close_codes=all)
    async def echo(ws: WebSocket) -> None:
        async for event in ws:
            await ws.send(
                {"type": "websocket.send", "text": event.get("text"), "bytes": event.get("bytes")}
            )

    @app.websocket_route("/close-first")
    async def close_first(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send("closing first")
        await ws.close(4001, "the server closes first")

    @app.websocket_route("/json", value_type="json", caught_close_codes=all)
    async def json_echo(ws: WebSocket) -> None:
        async for value in ws:
            await ws.send({"echo": value})

    @app.websocket_route("/reject", authenticate=_refuse)
    async def reject(ws: WebSocket) -> None:  # pragma: no cover - never admitted
        raise AssertionError("the authenticate hook refuses every handshake")

    @app.websocket_route("/stream", value_type="bytes", caught_close_codes=all)
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        for index in range(3):
            await ws.send(bytes([index]) * 100)
        async for message in ws:
            await ws.send(message)

    return app
