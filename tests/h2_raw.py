"""A minimal raw HTTP/2 client (prior knowledge, over a Trio TCP stream), built on ``h2``.

It sends what a test tells it, frame by frame, even what a polite client would not, and
collects what the server answers (WebSocket frames to put on a stream: masked_frame in
tests/raw_client.py). For RFC 8441 WebSockets with a real API, see tests/h2_client.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio

__all__ = ["H2Raw"]


class H2Raw:
    """One HTTP/2 connection to the server at ``127.0.0.1:port``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.events: list[Any] = []
        self.closed = False  # the server closed the TCP connection

    @classmethod
    async def open(cls, port: int) -> H2Raw:
        """Connect, exchange settings (the server's tell whether it allows RFC 8441)."""
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        client.connection.initiate_connection()
        await client.flush()
        await client.wait_for(lambda event: isinstance(event, h2.events.RemoteSettingsChanged))
        return client

    async def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def wait_for(self, found: Callable[[Any], bool]) -> Any:
        """Read until an event for which ``found`` is true (or the server closes: None)."""
        seen = 0
        while True:
            for event in self.events[seen:]:
                if found(event):
                    return event
            seen = len(self.events)
            if self.closed:
                return None
            data = await self.stream.receive_some()
            if not data:
                self.closed = True
                continue
            self.events += self.connection.receive_data(data)
            await self.flush()  # settings acks, window updates

    def request(self, headers: list[tuple[bytes, bytes]], *, end_stream: bool) -> int:
        stream_id: int = self.connection.get_next_available_stream_id()
        self.connection.send_headers(stream_id, headers, end_stream=end_stream)
        return stream_id

    def websocket(self, path: str, extra: list[tuple[bytes, bytes]] = ()) -> int:  # type: ignore[assignment]
        """Open an RFC 8441 WebSocket (extended CONNECT); returns its stream id."""
        return self.request(
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", b"127.0.0.1"),
                (b"sec-websocket-version", b"13"),
                *extra,
            ],
            end_stream=False,
        )

    async def response(self, stream_id: int) -> int:
        """The status of the response on ``stream_id``."""
        event = await self.wait_for(
            lambda event: (
                isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id
            )
        )
        assert event is not None, "the server closed the connection"
        return int(dict(event.headers)[b":status"])

    async def aclose(self) -> None:
        await self.stream.aclose()
