"""The fuzz client: carries out one :class:`~._actions.Session` on a real connection.

Well-formed parts go through the libraries a real client uses (``wsproto`` frames, an
``h2`` client connection with header validation off, so that bad pseudo-headers pass); where
``h2`` refuses, because the stream is closed or reset, say, the same frame goes out by
hand. A reader task drains what the server sends (and lets ``h2`` answer SETTINGS and
grant flow-control credit, as a client must) until the connection ends. Whatever the
server does, the client gives up quietly: a broken connection ends the session.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import hyperframe.exceptions
import trio
from wsproto.frame_protocol import FrameProtocol

from ._actions import (
    Action,
    Close,
    Connect,
    Frame,
    GoAway,
    Handshake,
    Message,
    Ping,
    Preface,
    Priority,
    Raw,
    RawFrame,
    Request,
    Reset,
    Session,
    Settings,
    Settle,
    StreamData,
    StreamRequest,
    Transport,
    Trickle,
    WebSocketFrames,
    WindowUpdate,
)
from ._wire import (
    http1_handshake,
    http1_request,
    http2_connect_headers,
    http2_frame,
    websocket_frame,
)

__all__ = ["BROKEN", "run_session"]

#: What a connection the server broke (or never finished) raises on the client's side.
BROKEN: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError)

_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_ERRORS: Final = (
    h2.exceptions.H2Error,
    hyperframe.exceptions.HyperframeError,
    ValueError,
    KeyError,
    AssertionError,
)

Settler = Callable[[], Awaitable[None]]


class _Connection:
    """One client connection: the stream, the h2 state if any, and a reader."""

    def __init__(
        self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream], http2: bool
    ) -> None:
        self.stream = stream
        self.send_lock = trio.Lock()
        self.peer_closed = trio.Event()
        self.h2: h2.connection.H2Connection | None = None
        if http2:
            config = h2.config.H2Configuration(
                client_side=True,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
            self.h2 = h2.connection.H2Connection(config)
        # One wsproto frame writer per stream (0 is the HTTP/1.1 connection itself).
        self._framers: dict[int, FrameProtocol] = {}

    @property
    def socket(self) -> socket.socket:
        transport = self.stream
        if isinstance(transport, trio.SSLStream):
            transport = transport.transport_stream
        return transport.socket  # type: ignore[return-value]

    async def write(self, data: bytes) -> None:
        if data:
            async with self.send_lock:
                await self.stream.send_all(data)

    async def flush_h2(self) -> None:
        if self.h2 is not None:
            await self.write(self.h2.data_to_send())

    async def read_forever(self) -> None:
        """Drain the server's bytes; feed them to h2 while it can follow."""
        try:
            while data := await self.stream.receive_some(65536):
                if self.h2 is None:
                    continue
                try:
                    events = self.h2.receive_data(data)
                    for event in events:
                        if isinstance(event, h2.events.DataReceived) and event.stream_id:
                            self.h2.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                except _H2_ERRORS:
                    self.h2 = None  # the client's view of the connection is lost: just drain
                await self.flush_h2()
        except BROKEN:
            pass
        finally:
            self.peer_closed.set()

    def frames_of(self, stream_id: int, content: WebSocketFrames) -> bytes:
        """The bytes of a WebSocket frame (or message) on ``stream_id``."""
        if isinstance(content, Message):
            framer = self._framers.setdefault(stream_id, FrameProtocol(client=True, extensions=[]))
            data: bytes | str = (
                content.payload.decode("utf-8", "replace") if content.text else content.payload
            )
            size = max(len(data) // content.fragments, 1)
            pieces = [data[start : start + size] for start in range(0, len(data), size)] or [data]
            out = bytearray()
            try:
                for index, piece in enumerate(pieces):
                    out += framer.send_data(piece, fin=index == len(pieces) - 1)
            except ValueError:
                # A text message inside an unfinished binary one (or the other way round):
                # wsproto refuses; send it as its first frame would be.
                opcode = 1 if content.text else 2
                return websocket_frame(opcode, content.payload)
            return bytes(out)
        if isinstance(content, Frame):
            return websocket_frame(
                content.opcode,
                content.payload,
                fin=content.fin,
                rsv=content.rsv,
                masked=content.masked,
                claimed_length=content.claimed_length,
            )
        if isinstance(content, Close):
            payload = b"" if content.code is None else struct.pack("!H", content.code & 0xFFFF)
            return websocket_frame(8, payload + content.reason)
        return websocket_frame(9, content.payload)


async def _open(
    session: Session, address: tuple[str, int], ssl_context: ssl.SSLContext
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    stream = await trio.open_tcp_stream(*address)
    if not session.transport.tls or session.transport is Transport.TLS_RAW:
        return stream
    tls = trio.SSLStream(stream, ssl_context, server_hostname="localhost")
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def run_session(
    session: Session, address: tuple[str, int], ssl_context: ssl.SSLContext, settle: Settler
) -> None:
    """Carry out ``session`` against the server at ``address``.

    Args:
        session: What to do.
        address: The plain or the TLS port, as the transport wants.
        ssl_context: For TLS transports, a client context that trusts the server and offers
            the transport's protocol through ALPN.
        settle: Waits until the server is idle.
    """
    try:
        stream = await _open(session, address, ssl_context)
    except BROKEN:
        return
    connection = _Connection(stream, session.transport.http2)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.read_forever)
            try:
                for action in session.actions:
                    await _perform(connection, action, settle, session.transport.tls)
                await _end(connection, session.ending, settle)
            except BROKEN:
                pass
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def _end(connection: _Connection, ending: str, settle: Settler) -> None:
    if ending == "settle":
        await settle()
    elif ending == "abort":
        # SO_LINGER 0: close() sends RST instead of FIN.
        connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return
    elif ending == "half":
        transport = connection.stream
        if isinstance(transport, trio.SSLStream):
            transport = transport.transport_stream
        async with connection.send_lock:
            await transport.send_eof()
        # Whatever the server does about it (close, answer, nothing), it has done once idle.
        await settle()
        return
    with trio.move_on_after(0.5):
        await connection.stream.aclose()


async def _perform(connection: _Connection, action: Action, settle: Settler, tls: bool) -> None:
    if isinstance(action, Raw):
        await connection.write(action.data)
    elif isinstance(action, Trickle):
        for byte in action.data:
            await connection.write(bytes([byte]))
            await settle()
    elif isinstance(action, Settle):
        await settle()
    elif isinstance(action, Handshake):
        request = http1_handshake(action.path, action.origin, action.flaw)
        await connection.write(request if action.cut is None else request[: action.cut])
    elif isinstance(action, Request):
        await connection.write(
            http1_request(action.method, action.path, action.body, action.framing)
        )
    elif isinstance(action, (Message, Frame, Close, Ping)):
        await connection.write(connection.frames_of(0, action))
    else:
        await _perform_http2(connection, action, tls)


async def _perform_http2(connection: _Connection, action: Action, tls: bool) -> None:
    conn = connection.h2
    if isinstance(action, Preface):
        if conn is not None:
            conn.initiate_connection()
            settings = conn.data_to_send()[len(_PREFACE) :]
        else:
            settings = http2_frame(4, 0, 0, b"")
        if action.flaw == "truncated":
            await connection.write(_PREFACE[:11])
        elif action.flaw == "bad-magic":
            await connection.write(_PREFACE.replace(b"SM", b"XX") + settings)
        elif action.flaw == "no-settings":
            await connection.write(_PREFACE)
        else:
            await connection.write(_PREFACE + settings)
        return
    # WebSocket frames are made once (wsproto keeps fragmentation state), and the frame by
    # hand only if h2 refuses: HPACK encoding twice would leave the server's table behind.
    data = (
        (
            action.content
            if isinstance(action.content, bytes)
            else connection.frames_of(action.stream, action.content)
        )
        if isinstance(action, StreamData)
        else b""
    )
    try:
        if conn is None:
            raise h2.exceptions.ProtocolError("no h2 state: send by hand")
        _through_h2(conn, action, tls, data)
    except _H2_ERRORS:
        # h2 refused (a closed stream, an invalid value): the frame goes out anyway.
        if conn is not None:
            conn.clear_outbound_data_buffer()
        await connection.write(_raw_http2(conn, action, tls, data))
        return
    await connection.flush_h2()


def _connect_headers(action: Connect, tls: bool) -> list[tuple[bytes, bytes]]:
    return http2_connect_headers(
        action.path, action.origin, action.flaw, "https" if tls else "http"
    )


def _request_headers(action: StreamRequest, tls: bool) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", action.method.encode()),
        (b":scheme", b"https" if tls else b"http"),
        (b":path", action.path.encode()),
        (b":authority", b"localhost"),
    ]


def _through_h2(conn: h2.connection.H2Connection, action: Action, tls: bool, data: bytes) -> None:
    """The action through h2's client state machine (raises where h2 would not send it)."""
    if isinstance(action, Connect):
        conn.send_headers(action.stream, _connect_headers(action, tls), action.end_stream)
    elif isinstance(action, StreamRequest):
        conn.send_headers(action.stream, _request_headers(action, tls), action.end_stream)
    elif isinstance(action, StreamData):
        conn.send_data(action.stream, data, action.end_stream)
    elif isinstance(action, Reset):
        conn.reset_stream(action.stream, action.code)
    elif isinstance(action, Settings):
        if action.ack:
            raise h2.exceptions.ProtocolError("h2 acknowledges by itself")
        conn.update_settings(dict(action.parameters))
    elif isinstance(action, WindowUpdate):
        conn.increment_flow_control_window(action.increment, action.stream or None)
    elif isinstance(action, Priority):
        conn.prioritize(action.stream, action.weight, action.depends_on, action.exclusive)
    elif isinstance(action, GoAway):
        conn.close_connection(action.code, last_stream_id=action.last_stream)
    else:
        raise h2.exceptions.ProtocolError("a raw frame")


def _raw_http2(
    conn: h2.connection.H2Connection | None, action: Action, tls: bool, data: bytes
) -> bytes:
    """The action as one frame built by hand, in case h2 refuses it."""
    if isinstance(action, (Connect, StreamRequest)):
        headers = (
            _connect_headers(action, tls)
            if isinstance(action, Connect)
            else _request_headers(action, tls)
        )
        # The server's HPACK table follows this encoder: use h2's own, or a fresh one.
        encoder = conn.encoder if conn is not None else hpack.Encoder()
        block = encoder.encode(headers)
        return http2_frame(1, 0x4 | (0x1 if action.end_stream else 0), action.stream, block)
    if isinstance(action, StreamData):
        return http2_frame(0, 0x1 if action.end_stream else 0, action.stream, data)
    if isinstance(action, Reset):
        return http2_frame(3, 0, action.stream, struct.pack("!I", action.code))
    if isinstance(action, Settings):
        payload = b"".join(struct.pack("!HI", key, value) for key, value in action.parameters)
        return http2_frame(4, 0x1 if action.ack else 0, 0, payload)
    if isinstance(action, WindowUpdate):
        return http2_frame(8, 0, action.stream, struct.pack("!I", action.increment))
    if isinstance(action, Priority):
        dependency = action.depends_on | (0x80000000 if action.exclusive else 0)
        payload = struct.pack("!IB", dependency, action.weight - 1)
        return http2_frame(2, 0, action.stream, payload)
    if isinstance(action, GoAway):
        return http2_frame(7, 0, 0, struct.pack("!II", action.last_stream, action.code))
    if isinstance(action, RawFrame):
        return http2_frame(action.frame_type, action.flags, action.stream, action.payload)
    raise TypeError(f"not an HTTP/2 action: {action!r}")
