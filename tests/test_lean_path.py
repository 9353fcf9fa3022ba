"""The lean per-message path (trio_bocaws._hypercorn._lean) keeps hypercorn's semantics:
whole frames under cancellation and concurrent senders, read timeouts, EOF and resets,
a send racing the close."""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trio_bocaws import WebSocket, WebSocketDisconnect

from .conftest import (
    Server,
    connect,
    receive_from_tasks,
    recording_handler,
    send_from_tasks,
    websocket_app,
)
from .raw_client import ServerFrames, masked_frame, raw_connection

Serve = Callable[..., Awaitable[Server]]


async def test_a_cancelled_send_to_a_client_that_stopped_reading_still_ends_whole(
    serve: Serve,
) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffers hold
    scope = trio.CancelScope()
    completed: list[int] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with scope:
            while True:
                await ws.send_bytes(payload)
                completed.append(1)
        await ws.send_text("after")
        await ws.receive_text()

    server = await serve(websocket_app(handler))
    with trio.fail_after(20):
        frames = await ServerFrames.connect(server.url)
        async with frames.stream as stream:
            # The client reads nothing until every task, the sender included, is blocked:
            # the sender is then inside a write the socket cannot take.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            blocked_after = len(completed)
            scope.cancel()
            whole = 0
            while True:
                opcode, data = await frames.next()
                if opcode == 0x1:
                    break
                assert (opcode, data == payload) == (0x2, True), f"frame {whole} cut"
                whole += 1
            assert data == b"after"
            # The send that was blocked when the cancellation came reached the client
            # whole (it may be cancelled after its write: then it never returned).
            assert whole in (len(completed), len(completed) + 1)
            assert whole == blocked_after + 1
            await stream.send_all(masked_frame(0x1, b"bye"))


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
async def test_concurrent_senders_never_interleave(serve: Serve, http2: bool) -> None:
    senders, each = 16, 8

    # 16 tasks; on HTTP/1.1 4 KiB to 64 KiB, some past what one write takes; on HTTP/2
    # 1 KiB to 16 KiB through one stream's bounded buffer.
    unit = 1024 if http2 else 4096

    def message(task: int, index: int) -> str:
        return f"{task}:{index}:" + chr(65 + task) * (unit * (task + 1))

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await send_from_tasks(ws, senders, each, message)
        await ws.receive_text()

    server = await serve(websocket_app(handler))
    with trio.fail_after(20):
        if http2:
            from .h2_client import open_h2_connection

            async with open_h2_connection(server.url) as connection:
                websocket = await connection.websocket("/")
                received = await receive_from_tasks(websocket.receive, senders, each, message)
                await websocket.send("done")
        else:
            async with connect(server.url, max_message_size=2**20) as client:
                received = await receive_from_tasks(client.get_message, senders, each, message)
                await client.send_message("done")
    assert all(indexes == list(range(each)) for indexes in received.values())


async def test_a_silent_peer_is_still_dropped_by_the_read_timeout(serve: Serve) -> None:
    seen, told, handler = recording_handler()
    server = await serve(websocket_app(handler), read_timeout=0.2)
    with trio.fail_after(10):
        stream = await raw_connection(server.url, "/")
        async with stream:
            while await stream.receive_some():  # says nothing: dropped, EOF
                pass
        await told.wait()
    assert seen == [1006]


@pytest.mark.parametrize("reset", [False, True], ids=["eof", "reset"])
async def test_an_abrupt_disconnect_ends_the_connection(serve: Serve, reset: bool) -> None:
    seen: list[int] = []
    gone = trio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
            gone.set()

    server = await serve(websocket_app(handler))
    with trio.fail_after(10):
        frames = await ServerFrames.connect(server.url)
        stream = frames.stream
        await stream.send_all(masked_frame(0x1, b"hello"))
        assert await frames.next() == (0x1, b"hello")
        if reset:  # an RST instead of a FIN
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        await gone.wait()
        assert seen == [1006]
        # The server goes on.
        async with connect(server.url) as client:
            await client.send_message("again")
            assert await client.get_message() == "again"


class _Protocol:
    """What the TCP server tells its protocol, recorded."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def handle(self, event: Any) -> None:
        self.events.append(event)


def _tcp_server(stream: trio.SocketStream) -> Any:
    from hypercorn.trio.tcp_server import TCPServer

    server = TCPServer.__new__(TCPServer)
    server.stream = stream  # type: ignore[assignment]
    server.send_lock = trio.Lock()
    server.protocol = _Protocol()  # type: ignore[assignment]
    return server


async def test_sends_racing_the_close_end_quietly() -> None:
    from hypercorn.events import Closed, RawData

    for _ in range(100):
        ours, theirs = trio.socket.socketpair()
        server = _tcp_server(trio.SocketStream(ours))
        async with trio.open_nursery() as nursery:  # no BusyResourceError escapes
            nursery.start_soon(server._close)
            nursery.start_soon(server.protocol_send, RawData(b"x"))
        theirs.close()
    # A send after the close, its descriptor's number already given to a new socket.
    ours, theirs = trio.socket.socketpair()
    number = ours.fileno()
    server = _tcp_server(trio.SocketStream(ours))
    await server._close()
    reused, reused_peer = socket.socketpair()
    reused.setblocking(False)
    reused_peer.setblocking(False)
    with reused, reused_peer, theirs:
        assert number in (reused.fileno(), reused_peer.fileno())  # the number was reused
        await server.protocol_send(RawData(b"not for you"))
        assert [type(event) for event in server.protocol.events] == [Closed]
        for sock in (reused, reused_peer):
            with pytest.raises(BlockingIOError):
                sock.recv(100)


def _count_server_side_calls(monkeypatch: pytest.MonkeyPatch, port: list[int]) -> dict[str, int]:
    """Counts of trio's SocketStream.send_all and receive_some on the server's side."""
    calls = {"send_all": 0, "receive_some": 0}

    def counting(name: str) -> Any:
        original = getattr(trio.SocketStream, name)

        async def wrapper(self: trio.SocketStream, *args: Any) -> Any:
            if self.socket.getsockname()[1] in port:
                calls[name] += 1
            return await original(self, *args)

        return wrapper

    for name in calls:
        monkeypatch.setattr(trio.SocketStream, name, counting(name))
    return calls


async def test_tls_keeps_hypercorns_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import ssl

    from .h2_client import open_h2_connection
    from .test_http2 import certificate_files, echo_app, echoes, running

    port: list[int] = []
    calls = _count_server_side_calls(monkeypatch, port)
    authority, certfile, keyfile = certificate_files(tmp_path)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    with trio.fail_after(10):
        async with running(echo_app([]), certfile=certfile, keyfile=keyfile) as (url, _):
            port.append(int(url.rsplit(":", 1)[1]))
            async with open_h2_connection(url, ssl_context=trusting) as connection:
                for index in range(5):
                    await echoes(connection, "/text", f"m{index}")
    # Under TLS hypercorn's own reads and writes (send_all, receive_some) carry it all.
    assert calls["send_all"] >= 5
    assert calls["receive_some"] >= 5


async def test_the_lean_paths_are_taken(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once connected, the server's messages pass without trio's send_all and
    receive_some (which hypercorn's own code calls for every one)."""
    port: list[int] = []
    calls = _count_server_side_calls(monkeypatch, port)

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    server = await serve(websocket_app(handler))
    port.append(int(server.url.rsplit(":", 1)[1]))
    with trio.fail_after(10):
        async with connect(server.url) as client:
            for index in range(20):
                await client.send_message(f"m{index}")
                assert await client.get_message() == f"m{index}"
    assert calls == {"send_all": 0, "receive_some": 0}
