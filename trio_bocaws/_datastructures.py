"""Read-only views of the handshake request: URL, headers, query parameters, client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import SplitResult, parse_qsl, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

__all__ = [
    "URL",
    "Address",
    "Headers",
    "QueryParams",
    "headers_from_scope",
    "query_params_from_scope",
    "url_from_scope",
]

Headers = CIMultiDictProxy[str]
"""Case-insensitive, read-only, multi-valued: ``headers["Origin"]``, ``headers.getall(...)``."""

QueryParams = MultiDictProxy[str]
"""Read-only; ``params["q"]`` is the first value, ``params.getall("q")`` every value."""


class Address(NamedTuple):
    """A network address as ``(host, port)``."""

    host: str
    port: int


class URL(str):
    """The URL a WebSocket connected to: a ``str``, with its parts as attributes.

    >>> url = URL("ws://example.com:8000/chat/lobby?user=ada")
    >>> url.path, url.port, url.query
    ('/chat/lobby', 8000, 'user=ada')
    """

    __slots__ = ()

    @property
    def _parts(self) -> SplitResult:
        return urlsplit(self)

    @property
    def scheme(self) -> str:
        """``"ws"`` or ``"wss"``."""
        return self._parts.scheme

    @property
    def netloc(self) -> str:
        """Host and port as they appear in the URL."""
        return self._parts.netloc

    @property
    def hostname(self) -> str | None:
        """The host, lower-cased, without brackets around an IPv6 address."""
        return self._parts.hostname

    @property
    def port(self) -> int | None:
        """The port if the URL names one."""
        return self._parts.port

    @property
    def path(self) -> str:
        """The path, percent-decoded as the server gave it."""
        return self._parts.path

    @property
    def query(self) -> str:
        """The raw query string, without the ``?``."""
        return self._parts.query


_DEFAULT_PORTS = {"ws": 80, "wss": 443, "http": 80, "https": 443}


def url_from_scope(scope: Mapping[str, Any]) -> URL:
    """Rebuild the URL the client asked for from an ASGI scope."""
    scheme = scope.get("scheme", "ws")
    host = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        server = scope.get("server")
        if server is None:
            host = "localhost"
        else:
            server_host, port = server[0], server[1]
            if ":" in server_host:  # a bare IPv6 address needs brackets in a URL
                server_host = f"[{server_host}]"
            host = (
                server_host
                if port is None or _DEFAULT_PORTS.get(scheme) == port
                else f"{server_host}:{port}"
            )
    # ASGI puts the root path inside "path" already (hypercorn does); add it only if not.
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and not path.startswith(root):
        path = root + path
    query = scope.get("query_string", b"")
    url = f"{scheme}://{host}{path}"
    if query:
        url += "?" + query.decode("latin-1")
    return URL(url)


def headers_from_scope(scope: Mapping[str, Any]) -> Headers:
    """Headers of the handshake, decoded as latin-1 (HTTP's own encoding)."""
    return CIMultiDictProxy(
        CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope.get("headers", ())
        )
    )


def query_params_from_scope(scope: Mapping[str, Any]) -> QueryParams:
    """Query parameters, percent-decoded as UTF-8; blank values are kept."""
    query = scope.get("query_string", b"").decode("latin-1")
    return MultiDictProxy(MultiDict(parse_qsl(query, keep_blank_values=True)))
