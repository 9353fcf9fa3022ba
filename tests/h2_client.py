"""A small WebSocket client over HTTP/2 (RFC 8441), on Trio, for tests.

One :class:`H2Connection` speaks HTTP/2 to the server, by prior knowledge on a plain port
or through TLS with ALPN ``h2``, and opens any number of WebSockets on it, each an
extended CONNECT stream (``:protocol websocket``)::

    async with open_h2_connection("ws://127.0.0.1:8000") as connection:
        ws = await connection.websocket("/echo")
        await ws.send("hi")
        assert await ws.receive() == "hi"
        assert await ws.close(1000, "bye") == (1000, "bye")

The ``h2`` package keeps the HTTP/2 state and ``wsproto`` the WebSocket frames inside each
stream. One task reads the connection and sorts what arrives into each stream's inbox;
sends go out under a lock and wait for flow-control credit. A stream can stop reading
(:meth:`H2WebSocket.stop_reading`): from then on the client never returns credit for it
(no stream WINDOW_UPDATE), while the connection's credit, and the other streams, flow on.

Test code: it asserts little itself, and reports what the server did (status, close code,
RST_STREAM, GOAWAY) for the test to assert.
"""

from __future__ import annotations

import math
import ssl
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "ABNORMAL_CLOSURE",
    "H2Connection",
    "H2WebSocket",
    "NotHTTP2",
    "Rejected",
    "StreamClosed",
    "open_h2_connection",
]

ABNORMAL_CLOSURE = 1006  # what a client reports when no close frame came

Headers = list[tuple[bytes, bytes]]


class NotHTTP2(Exception):
    """The server did not speak HTTP/2: ``alpn`` is what TLS negotiated (``None`` on a plain
    port or without ALPN), ``received`` the first bytes it sent, if any."""

    def __init__(self, alpn: str | None, received: bytes) -> None:
        super().__init__(alpn, received)
        self.alpn = alpn
        self.received = received


class Rejected(Exception):
    """The server answered the extended CONNECT with an HTTP status other than 200."""

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        super().__init__(status, headers, body)
        self.status = status
        self.headers = headers
        self.body = body


class StreamClosed(Exception):
    """The WebSocket has ended: the server's close ``code`` and ``reason``, or 1006 if the
    stream or connection ended without a close frame (``reset`` then holds the
    RST_STREAM error code, if the server reset the stream)."""

    def __init__(self, code: int, reason: str, reset: int | None) -> None:
        super().__init__(code, reason, reset)
        self.code = code
        self.reason = reason
        self.reset = reset


class _Stream:
    """What the reader task has seen on one stream."""

    def __init__(self) -> None:
        self.response = trio.Event()  # set at the response headers, or at the stream's end
        self.status = 0
        self.headers: Headers = []
        self.body = bytearray()
        self.ended = trio.Event()  # END_STREAM, RST_STREAM or the connection's end
        self.reset: int | None = None
        self.websocket: H2WebSocket | None = None


class H2Connection:
    """One HTTP/2 connection; use :func:`open_h2_connection`."""

    def __init__(self, stream: trio.abc.Stream, authority: str, scheme: str) -> None:
        self._stream = stream
        self._authority = authority.encode()
        self._scheme = scheme.encode()
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._write_lock = trio.Lock()
        self._streams: dict[int, _Stream] = {}
        self._settings = trio.Event()
        self._credit = trio.Event()  # replaced each time the server grants send credit
        self._first_bytes = b""
        self._spoke_http2 = False
        self.alpn: str | None = None
        """The protocol TLS negotiated (``"h2"``), or ``None`` on a plain port."""
        self.goaway: int | None = None
        """The error code of the server's GOAWAY, once one came."""
        self.closed = trio.Event()
        """Set when the server has closed the TCP connection (or it broke)."""

    async def _flush(self) -> None:
        async with self._write_lock:
            data = self._h2.data_to_send()
            if data:
                await self._stream.send_all(data)

    async def _start(self) -> None:
        self._h2.initiate_connection()
        await self._flush()

    async def _read(self) -> None:
        try:
            while True:
                data = await self._stream.receive_some(65536)
                if not data:
                    break
                if not self._settings.is_set():
                    self._first_bytes += data
                try:
                    events = self._h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._dispatch(event)
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()
            self._settings.set()
            self._credit.set()
            for state in self._streams.values():
                self._end(state)

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self._spoke_http2 = True
            self._settings.set()
            self._grant()
        elif isinstance(event, h2.events.WindowUpdated):
            self._grant()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code
        elif isinstance(event, h2.events.ResponseReceived):
            state = self._streams[event.stream_id]
            status = dict(event.headers)[b":status"]
            state.status = int(status)
            state.headers = [(k, v) for k, v in event.headers if not k.startswith(b":")]
            state.response.set()
        elif isinstance(event, h2.events.DataReceived):
            state = self._streams[event.stream_id]
            if state.websocket is None:
                state.body += event.data
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                state.websocket._feed(event.data)
                if state.websocket.reading:
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif event.flow_controlled_length:
                    # The connection's credit only: the other streams must go on.
                    self._h2.increment_flow_control_window(event.flow_controlled_length)
                    if self._h2.remote_flow_control_window(event.stream_id) <= 0:
                        state.websocket.window_shut.set()
        elif isinstance(event, h2.events.StreamEnded):
            self._end(self._streams[event.stream_id])
        elif isinstance(event, h2.events.StreamReset):
            state = self._streams[event.stream_id]
            state.reset = int(event.error_code)
            self._end(state)

    def _grant(self) -> None:
        self._credit.set()
        self._credit = trio.Event()

    def _end(self, state: _Stream) -> None:
        state.response.set()
        state.ended.set()
        if state.websocket is not None:
            state.websocket._end()

    async def _send_data(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Send ``data`` on a stream as flow control allows, waiting for credit."""
        view = memoryview(data)
        while view or end:
            if self.closed.is_set():
                raise trio.BrokenResourceError("the connection is closed")
            credit = self._credit
            size = min(
                len(view),
                self._h2.local_flow_control_window(stream_id),
                self._h2.max_outbound_frame_size,
            )
            if size == 0 and view:
                await credit.wait()
                continue
            chunk, view = bytes(view[:size]), view[size:]
            self._h2.send_data(stream_id, chunk, end_stream=end and not view)
            await self._flush()
            if not view:
                return

    async def websocket(
        self, path: str, *, headers: Iterable[tuple[str, str]] = ()
    ) -> H2WebSocket:
        """Open a WebSocket on a new stream of this connection (RFC 8441).

        Raises:
            Rejected: The server answered with another status than 200 (its body included).
            StreamClosed: The stream ended before any response.
        """
        await self._settings.wait()
        if not self._h2.remote_settings.enable_connect_protocol:
            raise NotHTTP2(self.alpn, b"SETTINGS_ENABLE_CONNECT_PROTOCOL is not 1")
        stream_id = self._h2.get_next_available_stream_id()
        state = self._streams[stream_id] = _Stream()
        request = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", self._scheme),
            (b":path", path.encode()),
            (b":authority", self._authority),
            (b"sec-websocket-version", b"13"),
        ]
        request += [(name.lower().encode(), value.encode()) for name, value in headers]
        self._h2.send_headers(stream_id, request)
        await self._flush()
        await state.response.wait()
        if state.status == 0:
            raise StreamClosed(ABNORMAL_CLOSURE, "", state.reset)
        if state.status != 200:
            await state.ended.wait()
            raise Rejected(state.status, state.headers, bytes(state.body))
        websocket = state.websocket = H2WebSocket(self, stream_id, state)
        if state.ended.is_set():  # pragma: no cover - accepted and ended in one read
            websocket._end()
        return websocket

    async def aclose(self) -> None:
        """Close the connection (GOAWAY, then TCP), whatever state its streams are in."""
        if not self.closed.is_set():
            try:
                self._h2.close_connection()
                await self._flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await self._stream.aclose()


class H2WebSocket:
    """A WebSocket on one stream of an :class:`H2Connection`."""

    def __init__(self, connection: H2Connection, stream_id: int, state: _Stream) -> None:
        self.stream_id = stream_id
        self.reading = True
        self.window_shut = trio.Event()
        """Set once the server has used up this stream's window after :meth:`stop_reading`:
        from then on it cannot send on it."""
        self._connection = connection
        self._state = state
        self._frames = Connection(ConnectionType.CLIENT)
        self._inbox_send, self._inbox = trio.open_memory_channel[str | bytes](math.inf)
        self._parts: list[Any] = []  # the frames of a message, all str or all bytes
        self.server_close: tuple[int, str] | None = None
        """The server's close code and reason, once its close frame came."""

    @property
    def reset(self) -> int | None:
        """The error code of the server's RST_STREAM on this stream, if it sent one."""
        return self._state.reset

    def stop_reading(self) -> None:
        """Never return flow-control credit for this stream again (the connection's credit
        still flows): the server can send it one window's worth, then must wait."""
        self.reading = False

    def _feed(self, data: bytes) -> None:
        if not data or self._frames.state is ConnectionState.CLOSED:
            return  # an empty frame ending the stream, or bytes after the close
        self._frames.receive_data(data)
        for event in self._frames.events():
            if isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    empty: Any = "" if isinstance(event, TextMessage) else b""
                    whole = empty.join(self._parts)
                    self._parts = []
                    self._inbox_send.send_nowait(whole)
            elif isinstance(event, Ping):
                self._answer(self._frames.send(event.response()), end=False)
            elif isinstance(event, CloseConnection):
                self.server_close = (event.code, event.reason or "")
                if self._frames.state is ConnectionState.REMOTE_CLOSING:
                    # Answer the close, and end our half of the stream with it.
                    self._answer(self._frames.send(event.response()), end=True)
                self._inbox_send.close()

    def _answer(self, data: bytes, *, end: bool) -> None:
        # Sent by the reader task (it flushes after each read). A few bytes, dropped when
        # they cannot go: a shut window (as a client that stopped reading would), the
        # stream reset, or a GOAWAY that came in the same read (h2 then refuses to send).
        with suppress(h2.exceptions.ProtocolError):
            self._connection._h2.send_data(self.stream_id, data, end_stream=end)

    def _end(self) -> None:
        self._inbox_send.close()

    def _closed(self) -> StreamClosed:
        code, reason = self.server_close or (ABNORMAL_CLOSURE, "")
        return StreamClosed(code, reason, self._state.reset)

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        if self._state.ended.is_set() or self._frames.state is not ConnectionState.OPEN:
            raise self._closed()
        await self._connection._send_data(self.stream_id, self._frames.send(event))

    async def receive(self) -> str | bytes:
        """The next message.

        Raises:
            StreamClosed: The WebSocket has ended (the server's close code, or 1006).
        """
        try:
            return await self._inbox.receive()
        except trio.EndOfChannel:
            raise self._closed() from None

    async def close(self, code: int = 1000, reason: str = "") -> tuple[int, str]:
        """Send a close frame (ending the stream) and wait for the server's close frame;
        messages that come first are dropped.

        Returns:
            The server's close code and reason (1006 and "" if the stream ended without).
        """
        if self._frames.state is ConnectionState.OPEN and not self._state.ended.is_set():
            data = self._frames.send(CloseConnection(code=code, reason=reason))
            await self._connection._send_data(self.stream_id, data, end=True)
        with trio.move_on_after(5):  # a test's outer fail_after is the real bound
            async for _ in self._inbox:
                pass
        return self.server_close or (ABNORMAL_CLOSURE, "")


@asynccontextmanager
async def open_h2_connection(
    url: str, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[H2Connection]:
    """Connect to the server of ``url`` (``ws://HOST:PORT`` or ``wss://HOST:PORT``) over HTTP/2.

    Over ``wss://`` it offers ALPN ``h2`` only, with ``ssl_context`` (which should trust the
    server's certificate). On exit the connection is closed.

    Raises:
        NotHTTP2: TLS did not negotiate ``h2``, or the server's first bytes were not
            HTTP/2's SETTINGS frame.
    """
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None or parts.scheme not in ("ws", "wss"):
        raise ValueError(f"open_h2_connection needs ws(s)://HOST:PORT, not {url!r}")
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port)
    stream: trio.abc.Stream = tcp
    alpn = None
    try:
        if parts.scheme == "wss":
            context = ssl_context or ssl.create_default_context()
            context.set_alpn_protocols(["h2"])
            stream = trio.SSLStream(tcp, context, server_hostname=parts.hostname)
            await stream.do_handshake()
            alpn = stream.selected_alpn_protocol()
            if alpn != "h2":
                raise NotHTTP2(alpn, b"")
        connection = H2Connection(stream, parts.netloc, "https" if alpn else "http")
        connection.alpn = alpn
        try:
            async with trio.open_nursery() as nursery:
                await connection._start()
                nursery.start_soon(connection._read)
                await connection._settings.wait()
                if connection._spoke_http2:
                    try:
                        yield connection
                    finally:
                        with trio.move_on_after(2, shield=True):
                            await connection.aclose()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # the test's own error, not a group around it
                raise group.exceptions[0] from None
            raise
        if not connection._spoke_http2:
            raise NotHTTP2(alpn, connection._first_bytes)
    finally:
        await stream.aclose()
