"""Bytes a well-behaved client library would refuse to send.

The fuzzer writes well-formed parts through ``wsproto`` and ``h2``; the malformed ones (a
frame with a bad opcode, a length that lies, no mask; a handshake without its key; a
pseudo-header out of place) are built here by hand, from the RFCs (6455, 9113, 8441).
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "HANDSHAKE_FLAWS",
    "HTTP2_CONNECT_FLAWS",
    "http1_handshake",
    "http1_request",
    "http2_connect_headers",
    "http2_frame",
    "websocket_frame",
]

# All-zero masking key: legal (RFC 6455 only asks for one), and the payload stays readable.
_MASK: Final = b"\0\0\0\0"


def websocket_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    claimed_length: int | None = None,
) -> bytes:
    """One WebSocket frame, as RFC 6455 section 5.2 lays it out, or bent.

    Args:
        opcode: 0-15; 3-7 and 11-15 are reserved (a server must fail the connection).
        payload: The payload bytes actually sent.
        fin: The FIN bit.
        rsv: The three reserved bits (0-7); non-zero without an extension is an error.
        masked: Clients must mask; an unmasked client frame is a protocol error.
        claimed_length: A length to announce instead of ``len(payload)``: more than is
            sent leaves the server waiting, less makes the rest look like a new frame.
    """
    length = len(payload) if claimed_length is None else claimed_length
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length & (2**64 - 1))
    return head + (_MASK if masked else b"") + payload


#: How a WebSocket handshake over HTTP/1.1 may be wrong.
HANDSHAKE_FLAWS: Final = (
    "no-key",
    "bad-key",
    "bad-version",
    "no-upgrade",
    "no-connection",
    "post",
    "http/1.0",
    "two-hosts",
    "long-header",
    "deflate",
    "subprotocol",
    "h2c-upgrade",
)

_KEY: Final = "dGhlIHNhbXBsZSBub25jZQ=="


def http1_handshake(path: str, origin: str | None, flaw: str | None) -> bytes:
    """The opening request of a WebSocket over HTTP/1.1 (RFC 6455 section 4.1)."""
    method, version = "GET", "HTTP/1.1"
    headers = [
        ("Host", "localhost"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", _KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    if origin is not None:
        headers.append(("Origin", origin))
    if flaw == "no-key":
        headers = [pair for pair in headers if pair[0] != "Sec-WebSocket-Key"]
    elif flaw == "bad-key":
        headers = [(n, "short" if n == "Sec-WebSocket-Key" else v) for n, v in headers]
    elif flaw == "bad-version":
        headers = [(n, "8" if n == "Sec-WebSocket-Version" else v) for n, v in headers]
    elif flaw == "no-upgrade":
        headers = [pair for pair in headers if pair[0] != "Upgrade"]
    elif flaw == "no-connection":
        headers = [pair for pair in headers if pair[0] != "Connection"]
    elif flaw == "post":
        method = "POST"
    elif flaw == "http/1.0":
        version = "HTTP/1.0"
    elif flaw == "two-hosts":
        headers.append(("Host", "other"))
    elif flaw == "long-header":
        headers.append(("X-Padding", "a" * 20_000))
    elif flaw == "deflate":
        headers.append(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"))
    elif flaw == "subprotocol":
        headers.append(("Sec-WebSocket-Protocol", "chat, , \x7f"))
    elif flaw == "h2c-upgrade":
        headers = [
            ("Host", "localhost"),
            ("Upgrade", "h2c"),
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
        ]
    lines = [f"{method} {path} {version}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def http1_request(method: str, path: str, body: bytes, framing: str) -> bytes:
    """A plain HTTP/1.1 request; ``framing`` says how its body is announced (or lied about)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
    if framing == "length":
        head += f"Content-Length: {len(body)}\r\n"
    elif framing == "short-length":
        head += f"Content-Length: {max(len(body) - 1, 0)}\r\n"
    elif framing == "long-length":
        head += f"Content-Length: {len(body) + 10}\r\n"
    elif framing == "bad-length":
        head += "Content-Length: -1\r\n"
    elif framing == "chunked":
        head += "Transfer-Encoding: chunked\r\n"
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    elif framing == "bad-chunked":
        head += "Transfer-Encoding: chunked\r\n"
        body = b"zz\r\n" + body
    return head.encode("latin-1", "replace") + b"\r\n" + body


#: How an extended CONNECT (RFC 8441 section 4) may be wrong.
HTTP2_CONNECT_FLAWS: Final = (
    "no-protocol",
    "other-protocol",
    "no-path",
    "empty-path",
    "no-authority",
    "no-scheme",
    "get",
    "two-paths",
    "uppercase-name",
    "connection-header",
    "pseudo-after-regular",
    "unknown-pseudo",
    "no-version",
)


def http2_connect_headers(
    path: str, origin: str | None, flaw: str | None, scheme: str
) -> list[tuple[bytes, bytes]]:
    """The header list of an extended CONNECT that opens a WebSocket over HTTP/2."""
    headers: list[tuple[str, str]] = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", scheme),
        (":path", path),
        (":authority", "localhost"),
        ("sec-websocket-version", "13"),
    ]
    if origin is not None:
        headers.append(("origin", origin))
    drop = {
        "no-protocol": ":protocol",
        "no-path": ":path",
        "no-authority": ":authority",
        "no-scheme": ":scheme",
        "no-version": "sec-websocket-version",
    }.get(flaw or "")
    if drop is not None:
        headers = [pair for pair in headers if pair[0] != drop]
    elif flaw == "other-protocol":
        headers[1] = (":protocol", "h2c")
    elif flaw == "empty-path":
        headers[3] = (":path", "")
    elif flaw == "get":
        headers[0] = (":method", "GET")
    elif flaw == "two-paths":
        headers.insert(4, (":path", "/other"))
    elif flaw == "uppercase-name":
        headers.append(("X-Upper", "1"))
    elif flaw == "connection-header":
        headers.append(("connection", "upgrade"))
    elif flaw == "pseudo-after-regular":
        headers.append((":authority", "late"))
    elif flaw == "unknown-pseudo":
        headers.insert(0, (":bogus", "1"))
    return [(name.encode(), value.encode("utf-8", "surrogateescape")) for name, value in headers]


def http2_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One HTTP/2 frame (RFC 9113 section 4.1), whatever its type, flags and payload say."""
    header = struct.pack("!I", len(payload))[1:] + bytes([frame_type & 0xFF, flags & 0xFF])
    return header + struct.pack("!I", stream_id & 0x7FFFFFFF) + payload
