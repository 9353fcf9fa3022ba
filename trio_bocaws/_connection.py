"""What a WebSocket connection asked for: the request side of the scope, and its options.

The base of :class:`~trio_bocaws.WebSocket` (as Starlette's ``HTTPConnection`` is of its
``WebSocket``): plain reads of the ASGI scope, parsed on first use, nothing that waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._config import WebSocketConfig
from ._datastructures import (
    URL,
    Address,
    Headers,
    QueryParams,
    headers_from_scope,
    query_params_from_scope,
    url_from_scope,
)

__all__ = ["Connection"]


class _Request:
    """What a WebSocket parsed from its scope, on first use."""

    __slots__ = ("headers", "query_params", "url")

    def __init__(self) -> None:
        self.url: URL | None = None
        self.headers: Headers | None = None
        self.query_params: QueryParams | None = None


class Connection:
    """The request side of a WebSocket connection and its options."""

    __slots__ = ("_config", "_request", "_scope")

    def __init__(self, scope: Mapping[str, Any], config: WebSocketConfig) -> None:
        self._scope = scope
        self._config = config
        # url, headers and query_params, parsed from the scope on first use: one field
        # for the three, since most connections never ask.
        self._request: _Request | None = None

    # -- What the client asked for ------------------------------------------------------

    @property
    def scope(self) -> Mapping[str, Any]:
        """The ASGI scope of the connection."""
        return self._scope

    @property
    def config(self) -> WebSocketConfig:
        """The options this connection runs with."""
        return self._config

    @property
    def url(self) -> URL:
        """The URL the client connected to, as a ``str`` with ``scheme``, ``hostname``,
        ``port``, ``path`` and ``query`` attributes."""
        request = self._parsed()
        if request.url is None:
            request.url = url_from_scope(self._scope)
        return request.url

    @property
    def headers(self) -> Headers:
        """The handshake's headers (read-only, case-insensitive, repeated names kept)."""
        request = self._parsed()
        if request.headers is None:
            request.headers = headers_from_scope(self._scope)
        return request.headers

    @property
    def query_params(self) -> QueryParams:
        """The query parameters (``params["k"]`` is the first value, ``params.getall("k")``
        every value)."""
        request = self._parsed()
        if request.query_params is None:
            request.query_params = query_params_from_scope(self._scope)
        return request.query_params

    def _parsed(self) -> _Request:
        request = self._request
        if request is None:
            self._request = request = _Request()
        return request

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order of preference."""
        return tuple(self._scope.get("subprotocols") or ())

    @property
    def client(self) -> Address | None:
        """The client's address, if the server knows it."""
        client = self._scope.get("client")
        return None if client is None else Address(client[0], client[1])

    # -- Options (Bocadillo exposed these as attributes) -------------------------------

    @property
    def auto_accept(self) -> bool:
        """Whether the handshake is accepted on first use."""
        return self._config.auto_accept

    @property
    def receive_type(self) -> Any:
        """What :meth:`receive` returns."""
        return self._config.receive_type

    @property
    def send_type(self) -> Any:
        """What :meth:`send` takes."""
        return self._config.send_type

    @property
    def caught_close_codes(self) -> Any:
        """Client close codes that end ``async with`` and ``async for`` quietly."""
        return self._config.caught_close_codes
