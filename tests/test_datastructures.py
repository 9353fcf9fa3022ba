from __future__ import annotations

from trio_bocaws import URL
from trio_bocaws._datastructures import (
    headers_from_scope,
    query_params_from_scope,
    url_from_scope,
)


def test_url_is_a_str_with_parts() -> None:
    url = URL("wss://Example.com:8443/a%20b/c?x=1&y=2")
    assert url == "wss://Example.com:8443/a%20b/c?x=1&y=2"
    assert (url.scheme, url.netloc, url.hostname, url.port) == (
        "wss",
        "Example.com:8443",
        "example.com",
        8443,
    )
    assert (url.path, url.query) == ("/a%20b/c", "x=1&y=2")
    assert URL("ws://h/").port is None


def test_url_from_scope_uses_root_path_and_default_ports() -> None:
    scope = {"scheme": "ws", "server": ("10.0.0.1", 80), "root_path": "/api", "path": "/ws"}
    assert url_from_scope(scope) == "ws://10.0.0.1/api/ws"
    assert url_from_scope({"scheme": "wss", "path": "/"}) == "wss://localhost/"


def test_query_params_decode_percent_escapes_and_keep_blanks() -> None:
    params = query_params_from_scope({"query_string": b"name=Ad%C3%A9le&empty=&x=1&x=2"})
    assert params["name"] == "Adéle"
    assert params["empty"] == ""
    assert params.getall("x") == ["1", "2"]


def test_headers_are_latin1_and_case_insensitive() -> None:
    headers = headers_from_scope({"headers": [(b"x-name", b"caf\xe9")]})
    assert headers["X-Name"] == "café"
    assert "x-NAME" in headers
