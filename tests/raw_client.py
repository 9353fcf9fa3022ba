"""Raw HTTP/1.1 bytes, for what a real client library will not send or will not show: a
WebSocket handshake by hand, client frames, the server's frames one by one, and plain HTTP
requests. For raw HTTP/2, see tests/h2_raw.py.
"""

from __future__ import annotations

import struct
from urllib.parse import urlsplit

import trio

__all__ = [
    "HANDSHAKE",
    "ServerFrames",
    "http_get",
    "http_request",
    "masked_frame",
    "raw_connection",
    "raw_handshake",
    "read_head",
    "read_to_end",
]

HANDSHAKE = (
    b"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


async def read_head(stream: trio.SocketStream) -> bytes:
    """What the server sent up to the end of a response's head (and whatever came with it
    in the same reads)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await stream.receive_some()
        assert chunk, f"the server closed after {received!r}"
        received += chunk
    return received


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """What the server sends until it closes the connection."""
    received = b""
    while chunk := await stream.receive_some():
        received += chunk
    return received


async def raw_handshake(url: str, path: str = "/echo") -> tuple[trio.SocketStream, bytes]:
    """A TCP stream to the server of ``url``, past a WebSocket handshake to ``path``, and
    the bytes that came after the response's head (the first frames can share its read)."""
    stream = await trio.open_tcp_stream(*_address(url))
    await stream.send_all(HANDSHAKE.replace(b"{path}", path.encode()))
    head, _, rest = (await read_head(stream)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return stream, rest


async def raw_connection(url: str, path: str = "/echo") -> trio.SocketStream:
    """A TCP stream to the server of ``url``, past a WebSocket handshake to ``path``."""
    stream, _ = await raw_handshake(url, path)
    return stream


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask; an all-zero mask keeps the payload readable)."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 2**16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


class ServerFrames:
    """Reads the server's (unmasked) frames off a raw stream."""

    def __init__(self, stream: trio.SocketStream, buffer: bytes = b"") -> None:
        self.stream = stream
        self.buffer = bytearray(buffer)

    @classmethod
    async def connect(cls, url: str, path: str = "/") -> ServerFrames:
        """Past the handshake, keeping what came with the response."""
        return cls(*await raw_handshake(url, path))

    async def _exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = await self.stream.receive_some(1 << 20)
            if not chunk:
                raise EOFError(f"EOF with {len(self.buffer)} of {count} bytes")
            self.buffer += chunk
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def next(self) -> tuple[int, bytes]:
        """The next frame's opcode and payload; it must be whole (FIN) and unmasked."""
        first, second = await self._exactly(2)
        assert first & 0x80, "a fragment: the server sends whole messages"
        assert not second & 0x80, "a masked server frame"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._exactly(8))
        return first & 0x0F, await self._exactly(length)


async def http_request(
    url: str, path: str, *, method: str = "GET", headers: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """``method`` ``path`` over HTTP/1.1 (``headers``: more header lines, each ending in
    CRLF): the status, the headers (lowercase names) and the body."""
    async with await trio.open_tcp_stream(*_address(url)) as stream:
        await stream.send_all(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        response = await read_to_end(stream)
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields, body


async def http_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` over HTTP/1.1: the status and the body."""
    status, _, body = await http_request(url, path)
    return status, body
