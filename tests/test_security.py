"""Who may connect (origins, authentication, TLS) and how much they may take (limits)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from trio_websocket import ConnectionClosed, ConnectionRejected

from trio_bocaws import (
    App,
    AppConfig,
    RejectConnection,
    ServerConfig,
    WebSocket,
    WebSocketConfig,
    WebSocketDisconnect,
    serve,
)
from trio_bocaws._origins import OriginPattern, same_origin
from trio_bocaws.testing import HandshakeRejected, TestClient

from .conftest import Server, assert_certificate_refused, close_code, close_of, connect
from .raw_client import raw_connection

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 5


def hello_app(**config: Any) -> App:
    app = App(config=AppConfig(**config))

    @app.websocket_route("/hello")
    async def hello(ws: WebSocket) -> None:
        await ws.send_text("hello")

    return app


async def refused(url: str, **options: Any) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as info:
        async with connect(url, **options):
            pass  # pragma: no cover
    return info.value


def origin(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"origin", value.encode())]


# -- Origins -------------------------------------------------------------------------------


async def test_a_cross_origin_handshake_is_refused_with_403_and_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(hello_app())
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, logger="trio_bocaws"):
        # What a browser sends when a page on another site opens the socket.
        rejected = await refused(
            server.url + "/hello", extra_headers=origin("https://evil.example")
        )
    assert rejected.status_code == 403
    assert rejected.body == b"origin 'https://evil.example' may not open this WebSocket"
    assert "from origin 'https://evil.example'" in caplog.text


async def test_same_host_origin_and_no_origin_are_accepted(serve: Serve) -> None:
    server = await serve(hello_app())
    same_host = "http://" + server.url.removeprefix("ws://")
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/hello", extra_headers=origin(same_host)) as client:
            assert await client.get_message() == "hello"
        async with connect(server.url + "/hello") as client:  # scripts send no Origin
            assert await client.get_message() == "hello"


async def test_listed_origins_exact_and_by_pattern(serve: Serve) -> None:
    app = hello_app(allowed_origins=["https://app.example.com", "*.partner.example"])
    server = await serve(app)
    url = server.url + "/hello"
    with trio.fail_after(TIMEOUT):
        for allowed in (
            "https://app.example.com",
            "https://eu.partner.example",
            "http://a.b.partner.example",
        ):
            async with connect(url, extra_headers=origin(allowed)) as client:
                assert await client.get_message() == "hello"
        for denied in (
            "http://app.example.com",  # wrong scheme for an exact entry
            "https://app.example.com:8443",  # wrong port
            "https://partner.example",  # the pattern is for subdomains
            "https://partner.example.evil.example",
            "null",  # sandboxed frames and file: pages
        ):
            assert (await refused(url, extra_headers=origin(denied))).status_code == 403, denied


async def test_requests_without_origin_can_be_refused(serve: Serve) -> None:
    server = await serve(hello_app(allow_missing_origin=False))
    with trio.fail_after(TIMEOUT):
        assert (await refused(server.url + "/hello")).status_code == 403


async def test_star_allows_every_origin() -> None:
    client = TestClient(hello_app(allowed_origins="*"))
    async with client.websocket_connect("/hello", headers={"origin": "null"}) as ws:
        assert await ws.receive_text() == "hello"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("ftp://x.example", "scheme must be http or https"),
        ("https://x.example/path", "invalid allowed origin"),
        ("https://x.example:0", "invalid port"),
        ("https://bad host", "invalid allowed origin"),
    ],
)
def test_invalid_origin_entries_name_the_problem(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppConfig(allowed_origins=[entry])


def test_origin_patterns_and_same_origin() -> None:
    assert str(OriginPattern.parse("HTTPS://App.Example.com")) == "https://app.example.com"
    assert str(OriginPattern.parse("*.example.com:8443")) == "*.example.com:8443"
    scope = {"headers": [(b"host", b"example.com")], "server": ("10.0.0.1", 8000)}
    # Behind a TLS-terminating proxy: the page is https, the proxy reaches us as ws.
    assert same_origin("https://example.com", scope)
    assert not same_origin("https://example.com.evil.example", scope)
    with_port = {"headers": [(b"host", b"127.0.0.1:8000")]}
    assert same_origin("http://127.0.0.1:8000", with_port)
    assert not same_origin("http://127.0.0.1:9000", with_port)
    assert same_origin("http://10.0.0.1:8000", {"server": ("10.0.0.1", 8000)})


# -- Authentication -------------------------------------------------------------------------


def authenticated_app() -> App:
    async def authenticate(ws: WebSocket) -> str:
        token = ws.query_params.get("token")
        if token is None:
            raise RejectConnection(401, "log in first", {"www-authenticate": "Bearer"})
        if token != "s3cret":
            raise RejectConnection(403, "unknown token")
        return "ada"

    def admins_only(ws: WebSocket) -> str:
        if ws.headers.get("x-admin") != "yes":
            raise RejectConnection(403, "admins only")
        return "admin"

    app = App(authenticate=authenticate)

    @app.websocket_route("/me")
    async def me(ws: WebSocket) -> None:
        await ws.send_text(f"you are {ws.user}")

    @app.websocket_route("/admin", authenticate=admins_only)
    async def admin(ws: WebSocket) -> None:
        await ws.send_text(f"you are {ws.user}")

    @app.websocket_route("/public", authenticate=None)
    async def public(ws: WebSocket) -> None:
        await ws.send_text(f"you are {ws.user}")

    return app


async def test_authentication_refuses_with_401_and_a_body(serve: Serve) -> None:
    server = await serve(authenticated_app())
    with trio.fail_after(TIMEOUT):
        missing = await refused(server.url + "/me")
        wrong = await refused(server.url + "/me?token=guess")
    assert (missing.status_code, missing.body) == (401, b"log in first")
    assert (b"www-authenticate", b"Bearer") in missing.headers
    assert (wrong.status_code, wrong.body) == (403, b"unknown token")


async def test_an_authenticated_view_sees_the_user(serve: Serve) -> None:
    server = await serve(authenticated_app())
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/me?token=s3cret") as client:
            assert await client.get_message() == "you are ada"
        async with connect(server.url + "/admin", extra_headers=[(b"x-admin", b"yes")]) as c:
            assert await c.get_message() == "you are admin"
        async with connect(server.url + "/public") as client:
            assert await client.get_message() == "you are None"
        assert (await refused(server.url + "/admin?token=s3cret")).body == b"admins only"


async def test_a_failing_hook_is_a_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(ws: WebSocket) -> None:
        raise KeyError("session store down")

    app = App(authenticate=broken)

    @app.websocket_route("/x")
    async def view(ws: WebSocket) -> None:
        pass  # pragma: no cover

    with pytest.raises(HandshakeRejected) as info:
        async with TestClient(app).websocket_connect("/x"):
            pass  # pragma: no cover
    assert info.value.status == 500
    assert "authenticate hook" in caplog.text and "session store down" in caplog.text


async def test_a_view_can_raise_reject_connection() -> None:
    app = App()

    @app.websocket_route("/early")
    async def early(ws: WebSocket) -> None:
        raise RejectConnection(429, "slow down")

    @app.websocket_route("/late")
    async def late(ws: WebSocket) -> None:
        await ws.send_text("accepted")
        raise RejectConnection(403, "changed my mind")

    client = TestClient(app)
    with pytest.raises(HandshakeRejected) as info:
        async with client.websocket_connect("/early"):
            pass  # pragma: no cover
    assert (info.value.status, info.value.body) == (429, b"slow down")
    async with client.websocket_connect("/late") as ws:
        assert await ws.receive_text() == "accepted"
        with pytest.raises(Exception, match="1008"):
            await ws.receive_text()


def test_authenticate_must_be_callable() -> None:
    with pytest.raises(TypeError, match="authenticate must be a callable"):
        App(authenticate="not a function")  # type: ignore[arg-type]


# -- TLS ------------------------------------------------------------------------------------


async def test_wss_with_a_verified_certificate(tmp_path: Path, nursery: trio.Nursery) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    certificate.private_key_pem.write_to_path(str(keyfile))
    config = ServerConfig(bind="127.0.0.1:0", certfile=str(certfile), keyfile=str(keyfile))
    stop = trio.Event()
    [url] = await nursery.start(partial(serve, hello_app(), config, shutdown_trigger=stop.wait))
    assert url.startswith("wss://127.0.0.1:")

    import trio_websocket

    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    with trio.fail_after(TIMEOUT):
        async with trio_websocket.open_websocket_url(url + "/hello", ssl_context=trusting) as ws:
            assert await ws.get_message() == "hello"
        # A client that does not trust the certificate's authority refuses the server.
        await assert_certificate_refused(url)
    stop.set()


# -- Limits ---------------------------------------------------------------------------------


async def test_over_the_connection_cap_handshakes_get_503(serve: Serve) -> None:
    app = App(config=AppConfig(max_connections=2))

    @app.websocket_route("/hold")
    async def hold(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    server = await serve(app)
    url = server.url + "/hold"
    with trio.fail_after(TIMEOUT):
        async with connect(url) as first, connect(url) as second:
            await first.send_message("a")
            assert await first.get_message() == "a"
            rejected = await refused(url)
            assert rejected.status_code == 503
            assert (b"retry-after", b"5") in rejected.headers
            assert app.connections == 2
            # The two open connections are unaffected.
            await second.send_message("b")
            assert await second.get_message() == "b"
        # Once they close, there is room again.
        await trio.testing.wait_all_tasks_blocked()
        assert app.connections == 0
        async with connect(url) as third:
            await third.send_message("c")
            assert await third.get_message() == "c"


async def test_an_idle_connection_is_closed_with_1001(serve: Serve) -> None:
    app = App()
    seen: list[str] = []

    @app.websocket_route("/chat", idle_timeout=0.3)
    async def chat(ws: WebSocket) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except trio.Cancelled:
            seen.append("cancelled")
            raise

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/chat") as busy:
            for _ in range(6):  # 0.6 s of activity: longer than the idle timeout
                await busy.send_message("still here")
                assert await busy.get_message() == "still here"
                await trio.sleep(0.1)
            with pytest.raises(ConnectionClosed) as closed:
                await busy.get_message()  # now it goes quiet
    assert close_of(closed) == (1001, "idle: no message for 0.3 seconds")
    assert seen == ["cancelled"]


async def test_an_oversized_message_is_1009_for_the_client_and_the_app(
    nursery: trio.Nursery,
) -> None:
    app = App()
    seen: list[int] = []
    done = trio.Event()

    @app.websocket_route("/upload", value_type="bytes", caught_close_codes=())
    async def upload(ws: WebSocket) -> None:
        try:
            async for chunk in ws:
                await ws.send(len(chunk).to_bytes(4, "big"))
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
        finally:
            done.set()

    config = ServerConfig(bind="127.0.0.1:0", max_message_size=64 * 1024)
    stop = trio.Event()
    [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
    with trio.fail_after(TIMEOUT):
        async with connect(url + "/upload", max_message_size=2**21) as client:
            await client.send_message(b"x" * 1000)
            assert await client.get_message() == (1000).to_bytes(4, "big")
            await client.send_message(b"x" * (64 * 1024 + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        await done.wait()
    assert close_code(closed) == 1009
    assert seen == [1009]
    stop.set()


def test_server_config_defaults_are_bounded() -> None:
    config = ServerConfig()
    assert config.max_message_size == 2**20
    assert AppConfig().max_connections == 10_000
    assert WebSocketConfig().idle_timeout is None
    with pytest.raises(ValueError, match="max_connections"):
        AppConfig(max_connections=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        WebSocketConfig(idle_timeout=0)


async def test_a_dead_peer_is_dropped_by_pings_and_read_timeout(nursery: trio.Nursery) -> None:
    """A client that completes the handshake, then neither reads nor answers pings."""
    app = App()
    seen: list[int] = []
    done = trio.Event()

    @app.websocket_route("/wait", caught_close_codes=())
    async def wait(ws: WebSocket) -> None:
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
        finally:
            done.set()

    config = ServerConfig(bind="127.0.0.1:0", ping_interval=0.1, read_timeout=0.5)
    stop = trio.Event()
    [url] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
    with trio.fail_after(TIMEOUT):
        # A silent client, and a healthy one alongside that answers the pings (trio-websocket
        # does) and stays.
        async with (
            await raw_connection(url, "/wait"),
            connect(url + "/wait") as healthy,
        ):
            await done.wait()  # the silent one was dropped
            assert seen == [1006]
            assert not healthy.closed
            await healthy.send_message("still fine")
    stop.set()
