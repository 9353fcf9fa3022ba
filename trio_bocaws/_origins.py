"""Which web pages may open a WebSocket: the check against cross-site WebSocket hijacking.

A browser attaches a site's cookies to a WebSocket handshake whichever page opens it, and
applies no CORS to it: without a check, any page a logged-in user visits can talk to the
WebSocket as that user. Browsers always send ``Origin``, and it cannot be forged from a
page, so the handshake is refused unless the origin is the server's own or one listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

__all__ = ["OriginPattern", "origin_allowed", "parse_origins", "same_origin"]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOST: Final = re.compile(r"(\*\.)?[A-Za-z0-9\-._~%]+|\[[0-9A-Fa-f:.]+\]")


@attrs.frozen
class OriginPattern:
    """One entry of ``allowed_origins``: ``https://app.example.com``, ``*.example.com``
    (any subdomain, any scheme), ``https://*.example.com:8443``, or ``*`` (any origin)."""

    scheme: str | None  # None: any scheme
    host: str  # lower-cased; "*.example.com" for subdomains; "*" for anything
    port: int | None  # None: the scheme's default port (or any, when scheme is None)

    @classmethod
    def parse(cls, text: str) -> OriginPattern:
        if not isinstance(text, str):
            raise TypeError(f"allowed_origins holds strings, not {text!r}")
        if text == "*":
            return cls(None, "*", None)
        scheme: str | None = None
        rest = text
        if "://" in text:
            scheme, rest = text.split("://", 1)
            scheme = scheme.lower()
            if scheme not in ("http", "https"):
                raise ValueError(f"allowed origin {text!r}: the scheme must be http or https")
        host, port = rest, None
        if rest.count(":") == 1 or (rest.startswith("[") and "]:" in rest):
            host, _, port_text = rest.rpartition(":")
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"allowed origin {text!r}: invalid port {port_text!r}")
            port = int(port_text)
        if not _HOST.fullmatch(host) or "/" in rest:
            raise ValueError(
                f"invalid allowed origin {text!r}: use scheme://host[:port] "
                "(https://app.example.com), a subdomain pattern (*.example.com) or *"
            )
        return cls(scheme, host.lower(), port)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if self.host == "*":
            return True
        if self.scheme is not None and self.scheme != scheme:
            return False
        if self.host.startswith("*."):
            if not host.endswith(self.host[1:]):
                return False
        elif self.host != host:
            return False
        if self.port is not None:
            return self.port == port
        return self.scheme is None or port == _DEFAULT_PORTS[scheme]

    def __str__(self) -> str:
        text = self.host if self.scheme is None else f"{self.scheme}://{self.host}"
        return text if self.port is None else f"{text}:{self.port}"


def parse_origins(value: object) -> tuple[OriginPattern, ...]:
    """Convert ``allowed_origins`` (a string or strings) into patterns, or raise."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise TypeError(f"allowed_origins must be a sequence of strings, not {value!r}")
    return tuple(
        entry if isinstance(entry, OriginPattern) else OriginPattern.parse(entry)
        for entry in value
    )


def _split(origin: str) -> tuple[str, str, int] | None:
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, parts.hostname.lower(), port


def _connected_host(scope: Mapping[str, Any]) -> tuple[str, int | None] | None:
    """The host (and port, if the client named one) the client asked for."""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            parts = urlsplit("//" + value.decode("latin-1"))
            try:
                port = parts.port
            except ValueError:
                return None
            return (parts.hostname or "").lower(), port
    server = scope.get("server")
    return None if server is None else (str(server[0]).lower(), server[1])


def same_origin(origin: str, scope: Mapping[str, Any]) -> bool:
    """Whether ``origin`` is the host the client connected to.

    Host names must be equal. Ports are compared when the Host header names one: behind a
    TLS-terminating proxy the page is ``https://example.com`` while the proxy reaches us
    as plain ``ws://`` with ``Host: example.com``, and that is the same site.
    """
    parsed, connected = _split(origin), _connected_host(scope)
    if parsed is None or connected is None:
        return False
    _, host, port = parsed
    connected_host, connected_port = connected
    return host == connected_host and (connected_port is None or connected_port == port)


def origin_allowed(
    origin: str | None,
    scope: Mapping[str, Any],
    allowed: tuple[OriginPattern, ...],
    allow_missing: bool,
) -> bool:
    """The App's check: a missing origin per ``allow_missing``; else same-origin or listed.

    The opaque origin ``null`` (sandboxed frames, ``file:`` pages) is refused unless ``*``
    is listed.
    """
    if origin is None:
        return allow_missing
    if any(pattern.host == "*" for pattern in allowed):
        return True
    if same_origin(origin, scope):
        return True
    parsed = _split(origin)
    return parsed is not None and any(pattern.matches(*parsed) for pattern in allowed)
