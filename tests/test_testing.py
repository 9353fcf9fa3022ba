"""trio_bocaws.testing: the in-process client behaves as hypercorn's trio worker would."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_bocaws import App, WebSocket
from trio_bocaws.testing import ConnectionClosed, HandshakeRejected, Server, TestClient

pytest_plugins = ["pytester"]


def bare(handler: Any) -> Any:
    """A bare ASGI app (no lifespan) running ``handler(scope, receive, send)``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        await handler(scope, receive, send)

    return app


def echo_app() -> App:
    app = App()

    @app.websocket_route("/echo/{name}")
    async def echo(ws: WebSocket, name: str, shout: bool = False) -> None:
        async for message in ws:
            await ws.send(f"{name}: {message.upper() if shout else message}")

    return app


async def test_echo_through_an_app() -> None:
    client = TestClient(echo_app())
    async with client.websocket_connect("/echo/ada?shout=1") as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "ada: HI"
        await ws.send_text("again")
        assert await ws.receive() == "ada: AGAIN"


async def test_json_and_bytes_both_ways() -> None:
    app = App()

    @app.websocket_route("/json", value_type="json")
    async def json_view(ws: WebSocket) -> None:
        await ws.send({"got": await ws.receive()})

    @app.websocket_route("/bytes", value_type="bytes")
    async def bytes_view(ws: WebSocket) -> None:
        await ws.send(await ws.receive() * 2)

    client = TestClient(app)
    async with client.websocket_connect("/json") as ws:
        await ws.send_json([1, "two"])
        assert await ws.receive_json() == {"got": [1, "two"]}
    async with client.websocket_connect("/bytes") as ws:
        await ws.send_bytes(b"ab")
        assert await ws.receive_bytes() == b"abab"


async def test_close_before_accept_is_a_refused_handshake_with_403() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4000, "reason": "dropped by hypercorn"})

    with pytest.raises(HandshakeRejected) as info:
        async with TestClient(bare(handler)).websocket_connect("/"):
            pass  # pragma: no cover
    assert (info.value.status, info.value.body) == (403, b"")


async def test_an_http_response_denial_is_delivered() -> None:
    app = App()

    @app.websocket_route("/private")
    async def private(ws: WebSocket) -> None:
        await ws.reject(401, body="log in first", headers={"www-authenticate": "Bearer"})

    with pytest.raises(HandshakeRejected) as info:
        async with TestClient(app).websocket_connect("/private"):
            pass  # pragma: no cover
    assert info.value.status == 401
    assert info.value.body == b"log in first"
    assert (b"www-authenticate", b"Bearer") in info.value.headers
    assert str(info.value) == "handshake refused with HTTP 401: log in first"


async def test_the_clients_close_code_and_reason_reach_the_app() -> None:
    seen: list[tuple[int, str]] = []
    app = App()

    @app.websocket_route("/watch", caught_close_codes=all)
    async def watch(ws: WebSocket) -> None:
        async for _ in ws:
            pass  # pragma: no cover
        assert ws.close_code is not None
        seen.append((ws.close_code, "seen"))

    async with TestClient(app).websocket_connect("/watch") as ws:
        await ws.close(4321, "leaving now")
    assert seen == [(4321, "seen")]


async def test_an_app_returning_without_closing_gives_1011_after_accept_500_before() -> None:
    async def accepts_then_returns(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async def returns_at_once(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async with TestClient(bare(accepts_then_returns)).websocket_connect("/") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive_text()
    assert closed.value.code == 1011
    with pytest.raises(HandshakeRejected) as refused:
        async with TestClient(bare(returns_at_once)).websocket_connect("/"):
            pass  # pragma: no cover
    assert refused.value.status == 500


async def test_the_apps_close_code_and_reason_reach_the_test() -> None:
    app = App()

    @app.websocket_route("/bye")
    async def bye(ws: WebSocket) -> None:
        await ws.send_text("one")
        await ws.close(4002, "that was all")

    async with TestClient(app).websocket_connect("/bye") as ws:
        assert await ws.receive_text() == "one"
        with pytest.raises(ConnectionClosed, match="4002: that was all") as closed:
            await ws.receive_text()
        assert (closed.value.code, closed.value.reason) == (4002, "that was all")
        assert (ws.close_code, ws.close_reason) == (4002, "that was all")
        with pytest.raises(ConnectionClosed):
            await ws.send_text("too late")


async def test_every_call_times_out(autojump_clock: trio.testing.MockClock) -> None:
    app = App()

    @app.websocket_route("/silent")
    async def silent(ws: WebSocket) -> None:
        await ws.accept()
        await trio.sleep_forever()

    async def never_answers(scope: Any, receive: Any, send: Any) -> None:
        await trio.sleep_forever()

    client = TestClient(app, timeout=2)
    async with client.websocket_connect("/silent") as ws:
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError, match="no message from the app within 2s"):
            await ws.receive_text()
        assert trio.current_time() - start == pytest.approx(2)
        with pytest.raises(trio.TooSlowError, match=r"within 0\.5s"):
            await ws.receive_text(timeout=0.5)
        # The app never receives: hypercorn's queue of 10 fills, then the send times out.
        for _ in range(10):
            await ws.send_text("x")
        with pytest.raises(trio.TooSlowError, match="did not take the message"):
            await ws.send_text("x", timeout=1)
    with pytest.raises(trio.TooSlowError, match="did not answer the handshake"):
        async with TestClient(bare(never_answers)).websocket_connect("/", timeout=3):
            pass  # pragma: no cover


async def test_app_exceptions_are_raised_in_the_test_unless_turned_off() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise LookupError("app bug")

    with pytest.raises(LookupError, match="app bug"):
        async with TestClient(bare(broken)).websocket_connect("/") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.receive_text()
    async with TestClient(bare(broken), raise_app_exceptions=False).websocket_connect("/") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive_text()
    assert closed.value.code == 1011


async def test_headers_subprotocols_and_query_reach_the_app() -> None:
    seen: dict[str, Any] = {}
    app = App()

    @app.websocket_route("/inspect", auto_accept=False)
    async def inspect(ws: WebSocket) -> None:
        seen.update(
            origin=ws.headers["origin"],
            offered=ws.subprotocols,
            query=dict(ws.query_params),
            path=ws.url.path,
        )
        await ws.accept("v2", headers=[("x-server", "yes")])

    client = TestClient(app)
    async with client.websocket_connect(
        "/inspect?a=1", headers={"Origin": "http://testserver"}, subprotocols=["v1", "v2"]
    ) as ws:
        assert ws.subprotocol == "v2"
        assert (b"x-server", b"yes") in ws.accept_headers
    assert seen == {
        "origin": "http://testserver",
        "offered": ("v1", "v2"),
        "query": {"a": "1"},
        "path": "/inspect",
    }


async def test_lifespan_runs_and_shutdown_closes_open_connections_with_1001() -> None:
    events: list[str] = []
    app = App()

    @app.on_startup
    def started() -> None:
        events.append("startup")
        app.nursery.start_soon(trio.sleep_forever)

    @app.on_shutdown
    def stopped() -> None:
        events.append("shutdown")

    @app.websocket_route("/wait")
    async def wait(ws: WebSocket) -> None:
        await ws.receive_text()

    async with TestClient(app) as client:
        assert events == ["startup"]
        async with client.websocket_connect("/wait") as ws:
            client.begin_shutdown()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (1001, "server shutting down")
    assert events == ["startup", "shutdown"]
    with pytest.raises(RuntimeError, match="needs `async with TestClient"):
        client.begin_shutdown()


async def test_a_failing_startup_is_an_error() -> None:
    app = App()

    @app.on_startup
    def fail() -> None:
        raise OSError("no database")

    with pytest.raises(RuntimeError, match=r"failed to start.*no database"):
        async with TestClient(app):
            pass  # pragma: no cover


# -- The pytest plugin ---------------------------------------------------------------------


@pytest.fixture
def bocaws_app() -> App:
    return echo_app()


async def test_plugin_client_fixture(bocaws_client: TestClient) -> None:
    async with bocaws_client.websocket_connect("/echo/plugin") as ws:
        await ws.send_text("x")
        assert await ws.receive_text() == "plugin: x"


async def test_plugin_server_fixture(bocaws_server: Server) -> None:
    from trio_bocaws.testing import open_websocket

    assert bocaws_server.url.startswith("ws://127.0.0.1:")
    with trio.fail_after(5):
        async with open_websocket(bocaws_server.url + "/echo/real") as ws:
            await ws.send_message("y")
            assert await ws.get_message() == "real: y"


def test_plugin_asks_for_the_app_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        """
        async def test_uses_client(bocaws_client):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a fixture named `bocaws_app`*"])
