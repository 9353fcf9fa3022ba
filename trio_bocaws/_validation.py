"""Checks run before anything reaches the server.

hypercorn's trio worker trusts what the application sends: a close code it should not send
reaches the client as a protocol error (1002), a subprotocol the client did not offer or a
reserved handshake header crashes the whole server process. Every value is checked here
first, with an error that names the problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

__all__ = [
    "APPLICATION_CODES",
    "HeadersLike",
    "validate_accept_headers",
    "validate_close_code",
    "validate_close_reason",
    "validate_reject_status",
    "validate_subprotocol",
]

# RFC 6455 section 7.4: 1004 is reserved, 1005, 1006 and 1015 must never be sent in a close
# frame, and 1016-2999 are reserved for future versions of the protocol. 1014 ("bad
# gateway") is registered with IANA, but wsproto (under trio-websocket, and hypercorn
# itself) does not know it and fails the connection with 1002 instead: refused too.
_SENDABLE_PROTOCOL_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1014)})
APPLICATION_CODES = range(3000, 5000)
"""Codes registered with IANA (3000-3999) or private to an application (4000-4999)."""

# A close frame's payload is at most 125 bytes, two of which carry the code.
MAX_REASON_BYTES = 123

# RFC 9110 token characters, for header names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Header values: visible ASCII, spaces and tabs, obs-text; never CR, LF or NUL.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")

# Headers the server writes itself during the handshake. hypercorn crashes on the first two;
# the others would be sent twice, with the client free to reject the handshake.
_RESERVED_HEADERS = frozenset(
    {
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"sec-websocket-version",
        b"upgrade",
        b"connection",
        b"content-length",
        b"transfer-encoding",
    }
)


HeadersLike: TypeAlias = (
    Mapping[str, str | bytes]
    | Mapping[bytes, str | bytes]
    | Iterable[tuple[str | bytes, str | bytes]]
)
"""Extra HTTP headers: a mapping, or ``(name, value)`` pairs of ``str`` or ``bytes``."""


def validate_close_code(code: object) -> int:
    """Return ``code`` if a server may send it in a close frame, else raise.

    Raises:
        TypeError: ``code`` is not an ``int``.
        ValueError: ``code`` is reserved or out of range.
    """
    if type(code) is not int:
        raise TypeError(f"a close code must be an int, not {type(code).__name__}")
    if code in _SENDABLE_PROTOCOL_CODES or code in APPLICATION_CODES:
        return code
    if code in (1005, 1006, 1015):
        why = "it is reserved for reporting a closure locally and never sent on the wire"
    elif code == 1004 or 1015 <= code <= 2999:
        why = "it is reserved by RFC 6455"
    elif code == 1014:
        why = "wsproto-based clients (trio-websocket) and servers fail the connection on it"
    elif 100 <= code <= 599:
        why = "it looks like an HTTP status; use reject() to refuse a handshake"
    else:
        why = "close codes range from 1000 to 4999"
    raise ValueError(
        f"cannot close a WebSocket with code {code}: {why}. "
        "Use 1000-1003 or 1007-1013, or 3000-4999 for your application's own codes"
    )


def validate_close_reason(reason: object) -> str:
    """Return ``reason`` if it fits in a close frame, else raise."""
    if not isinstance(reason, str):
        raise TypeError(f"a close reason must be a str, not {type(reason).__name__}")
    size = len(reason.encode("utf-8"))
    if size > MAX_REASON_BYTES:
        # wsproto would cut it silently, possibly in the middle of a character.
        raise ValueError(
            f"a close reason is at most {MAX_REASON_BYTES} bytes of UTF-8, "
            f"this one is {size} bytes"
        )
    return reason


def validate_reject_status(status: object) -> int:
    """Return ``status`` if it is an HTTP error status (400-599), else raise."""
    if type(status) is not int:
        raise TypeError(f"an HTTP status must be an int, not {type(status).__name__}")
    if not 400 <= status <= 599:
        raise ValueError(
            f"cannot reject a handshake with HTTP status {status}: use a 4xx or 5xx status"
        )
    return status


def validate_subprotocol(subprotocol: object, offered: Sequence[str]) -> str | None:
    """Return ``subprotocol`` if the client offered it (or it is ``None``), else raise."""
    if subprotocol is None:
        return None
    if not isinstance(subprotocol, str):
        raise TypeError(f"a subprotocol must be a str, not {type(subprotocol).__name__}")
    if subprotocol not in offered:
        listed = ", ".join(repr(name) for name in offered) if offered else "none"
        raise ValueError(
            f"cannot accept subprotocol {subprotocol!r}: the client did not offer it "
            f"(it offered {listed})"
        )
    return subprotocol


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{what} {value!r} is not latin-1 text") from None
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def validate_accept_headers(headers: HeadersLike | None) -> list[tuple[bytes, bytes]]:
    """Return extra handshake headers as ASGI byte pairs, lower-cased, or raise."""
    if headers is None:
        return []
    given: object = headers
    if isinstance(given, (str, bytes)):
        raise TypeError("headers must be pairs of (name, value), not a single string")
    items: Iterable[tuple[str | bytes, str | bytes]] = (
        headers.items() if isinstance(headers, Mapping) else headers
    )
    result = []
    for name, value in items:
        raw_name = _as_bytes(name, "header name").lower()
        raw_value = _as_bytes(value, "header value")
        if not _TOKEN.fullmatch(raw_name.decode("latin-1")):
            raise ValueError(f"invalid header name {raw_name!r}")
        if raw_name in _RESERVED_HEADERS:
            raise ValueError(
                f"header {raw_name.decode()!r} is part of the WebSocket handshake and is set "
                "by the server; pass the subprotocol as accept(subprotocol=...)"
                if raw_name == b"sec-websocket-protocol"
                else f"header {raw_name.decode()!r} is part of the WebSocket handshake and "
                "is set by the server"
            )
        if not _FIELD_VALUE.fullmatch(raw_value):
            raise ValueError(f"invalid value for header {raw_name.decode()!r}: {raw_value!r}")
        result.append((raw_name, raw_value))
    return result
