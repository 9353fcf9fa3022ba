"""Bytes a client sends before a WebSocket handshake's answer get one answer.

RFC 6455 (4.1) has the client wait for the server's answer before it sends frames; a
client that does not used to make the server try a second response on the same request:
hypercorn's 400 for the early bytes after the app's 403 or 101, or the app's answer after
the 400. h11 refused it, and the server logged an ERROR with a traceback, at the client's
will (the fuzz campaign found three families of it). Each test here runs a real server and
a raw client, checks the one response the client got, that nothing was logged at ERROR,
and that a bystander still echoes and a new connection is served.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import trio

from trio_bocaws import App, AppConfig, WebSocket

from .raw_client import HANDSHAKE, masked_frame, read_head, read_to_end
from .test_isolation import TIMEOUT, Serve, _bystander, _port

GOOD = b"https://good.example"
EVIL = b"https://evil.example"
# A close frame with a one-byte payload (a protocol error), as the fuzzer sent it.
BAD_CLOSE = masked_frame(0x8, b"\xb1")


def _app() -> App:
    app = App(config=AppConfig(allowed_origins=(GOOD.decode(),)))

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send_text(message)

    @app.websocket_route("/stream", value_type="bytes")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send(b"\0" * 100)
        async for message in ws:
            await ws.send(message)

    return app


@pytest.fixture(autouse=True)
def _capture_hypercorns_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """caplog sees hypercorn's error log too (hypercorn gives it its own handlers)."""
    hypercorn_log = logging.getLogger("hypercorn.error")
    hypercorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            yield
    finally:
        hypercorn_log.removeHandler(caplog.handler)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.levelno >= logging.ERROR
    ]


def _request(path: str, origin: bytes) -> bytes:
    return HANDSHAKE.replace(b"{path}", path.encode()).replace(
        b"\r\n\r\n", b"\r\nOrigin: " + origin + b"\r\n\r\n"
    )


async def _everything(stream: trio.SocketStream) -> bytes:
    """What the server sends until it closes, once the client has sent all it will."""
    await stream.send_eof()
    return await read_to_end(stream)


async def test_bytes_after_a_refusal_are_dropped(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """The app refused (403, the Origin check), then the bytes came: hypercorn answered
    them with a 400 after the 403, and h11 raised."""
    server = await serve(_app())
    with trio.fail_after(TIMEOUT):
        async with _bystander(server):
            stream = await trio.open_tcp_stream("127.0.0.1", _port(server))
            async with stream:
                await stream.send_all(_request("/echo", EVIL))
                head = await read_head(stream)
                assert head.startswith(b"HTTP/1.1 403 ")
                await stream.send_all(b"content-type")
                rest = head + await _everything(stream)
            assert rest.count(b"HTTP/1.1 ") == 1, rest
    assert _errors(caplog) == []


@pytest.mark.parametrize(
    ("path", "origin", "early"),
    [
        ("/echo", EVIL, b"content-type"),  # the app's refusal races the 400
        ("/echo", GOOD, b"\x00"),  # the app's accept races the 400
        ("/stream", GOOD, BAD_CLOSE),  # the same, with a frame
    ],
    ids=["refusal", "accept", "close-frame"],
)
@pytest.mark.parametrize("together", [True, False], ids=["one-write", "two-writes"])
async def test_bytes_before_the_answer_get_one_response(
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    path: str,
    origin: bytes,
    early: bytes,
    together: bool,
) -> None:
    """The bytes came before the app's answer: hypercorn's 400 and the app's answer raced
    on the same request (which wins depends on the scheduling, so each case is tried a
    few times); now the first answer is the only one, whichever it is."""
    server = await serve(_app())
    statuses = set()
    with trio.fail_after(TIMEOUT):
        async with _bystander(server):
            for _ in range(10):
                stream = await trio.open_tcp_stream("127.0.0.1", _port(server))
                async with stream:
                    if together:
                        await stream.send_all(_request(path, origin) + early)
                    else:
                        await stream.send_all(_request(path, origin))
                        await stream.send_all(early)
                    received = await _everything(stream)
                status = received[:12]
                statuses.add(status)
                assert status in {b"HTTP/1.1 400", b"HTTP/1.1 403", b"HTTP/1.1 101"}, received
                assert received.count(b"HTTP/1.1 ") == 1, received
    assert statuses, "no response at all"
    assert _errors(caplog) == []
