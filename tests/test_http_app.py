"""Plain HTTP on an App: 426 for a WebSocket route's path, the wrapped HTTP app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from trio_bocaws import App, AsyncAPIConfig, HTMLPage, WebSocket
from trio_bocaws.testing import TestClient

from .conftest import Server, connect
from .raw_client import http_request

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 5


def echo_app(http_app: Any = None, **options: Any) -> App:
    app = App(http_app, **options)

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    @app.websocket_route("/rooms/{room}")
    async def room(ws: WebSocket, room: str) -> None:
        await ws.send(room)

    return app


def assert_upgrade_required(answer: tuple[int, dict[str, str], bytes], path: str) -> None:
    status, headers, body = answer
    assert status == 426
    assert headers["upgrade"] == "websocket"
    assert headers["connection"].lower() == "upgrade"
    assert (
        body
        == (
            f"{path} is a WebSocket route: connect to it with a WebSocket client "
            "(ws:// or wss://), not a plain HTTP request\n"
        ).encode()
    )
    assert body.count(b"\n") == 1


async def test_a_plain_get_to_a_websocket_route_is_426_and_unknown_paths_404(
    serve: Serve,
) -> None:
    server = await serve(echo_app())
    with trio.fail_after(TIMEOUT):
        assert_upgrade_required(await http_request(server.url, "/echo"), "/echo")
        assert_upgrade_required(await http_request(server.url, "/rooms/den"), "/rooms/den")
        status, _, body = await http_request(server.url, "/nowhere")
        assert (status, body) == (404, b"Not Found")


async def test_the_wrapped_http_app_keeps_its_own_paths(serve: Serve) -> None:
    async def pages(scope: Any, receive: Any, send: Any) -> None:
        found = scope["path"] in ("/", "/echo")
        body = f"page {scope['path']}".encode() if found else b"no such page"
        headers = [(b"content-length", str(len(body)).encode())]
        status = 200 if found else 404
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    server = await serve(echo_app(pages))
    with trio.fail_after(TIMEOUT):
        # Its own page at a WebSocket route's path: its answer, not ours.
        assert (await http_request(server.url, "/echo"))[::2] == (200, b"page /echo")
        # Where it has nothing, a WebSocket route's path says what it is for.
        assert_upgrade_required(await http_request(server.url, "/rooms/den"), "/rooms/den")
        assert (await http_request(server.url, "/nowhere"))[::2] == (404, b"no such page")


async def test_426_behind_a_page_and_the_asyncapi_document(serve: Serve) -> None:
    app = echo_app(HTMLPage("<p>hi</p>"), asyncapi=AsyncAPIConfig(title="echo", version="1.0.0"))
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        assert (await http_request(server.url, "/"))[0] == 200
        assert (await http_request(server.url, "/asyncapi.json"))[0] == 200
        assert_upgrade_required(await http_request(server.url, "/echo"), "/echo")


# -- The wrapped HTTP app's lifespan ---------------------------------------------------------


def starlette_beside_websockets(events: list[str], *, fail: bool = False) -> App:
    """A Starlette app with a lifespan (and lifespan state), wrapped by an App."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, str]]:
        events.append("http startup")
        if fail:
            raise ConnectionRefusedError("database is down")
        yield {"pool": "the database pool"}
        events.append("http shutdown")

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.pool)

    app = App(Starlette(routes=[Route("/", home)], lifespan=lifespan))
    app.on_startup(lambda: events.append("ws startup"))
    app.on_shutdown(lambda: events.append("ws shutdown"))

    @app.websocket_route("/wait")
    async def wait(ws: WebSocket) -> None:
        try:
            await ws.send("ready")
            async for _ in ws:
                pass
        finally:
            events.append("websocket closed")

    return app


async def test_a_wrapped_starlette_apps_lifespan_runs_inside_the_apps(serve: Serve) -> None:
    events: list[str] = []
    server = await serve(starlette_beside_websockets(events))
    assert events == ["http startup", "ws startup"]
    with trio.fail_after(TIMEOUT):
        # Its lifespan state reaches its requests.
        assert (await http_request(server.url, "/"))[::2] == (200, b"the database pool")
        async with connect(server.url + "/wait") as client:
            assert await client.get_message() == "ready"
            await server.shutdown()
    assert events == [
        "http startup",
        "ws startup",
        "websocket closed",
        "ws shutdown",
        "http shutdown",
    ]


async def test_a_wrapped_apps_failed_startup_is_the_apps(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    app = starlette_beside_websockets(events, fail=True)
    with pytest.raises(RuntimeError) as info:
        async with TestClient(app):
            pass  # pragma: no cover
    assert str(info.value).startswith(
        "the app failed to start: the HTTP app Starlette failed to start: "
    )
    assert "database is down" in str(info.value)
    assert events == ["http startup"]  # the App's own startup did not run
    assert any("database is down" in r.getMessage() for r in caplog.records)


async def test_an_http_app_without_lifespan_is_left_without(serve: Serve) -> None:
    """HTMLPage returns at once on a lifespan scope, as many small ASGI apps do."""
    events: list[str] = []
    app = echo_app(HTMLPage("<p>hi</p>"))
    app.on_startup(lambda: events.append("ws startup"))
    server = await serve(app)
    assert events == ["ws startup"]
    with trio.fail_after(TIMEOUT):
        assert (await http_request(server.url, "/"))[::2] == (200, b"<p>hi</p>")


async def test_a_wrapped_quart_trio_apps_lifespan_runs_inside_the_apps(serve: Serve) -> None:
    quart_trio = pytest.importorskip("quart_trio")
    events: list[str] = []
    quart = quart_trio.QuartTrio("beside")

    async def open_pool() -> None:
        events.append("http startup")

    async def close_pool() -> None:
        events.append("http shutdown")

    async def home() -> str:
        return "quart page"

    quart.before_serving(open_pool)
    quart.after_serving(close_pool)
    quart.add_url_rule("/", view_func=home)

    app = echo_app(quart)
    app.on_startup(lambda: events.append("ws startup"))
    app.on_shutdown(lambda: events.append("ws shutdown"))
    server = await serve(app)
    assert events == ["http startup", "ws startup"]
    with trio.fail_after(TIMEOUT):
        assert (await http_request(server.url, "/"))[::2] == (200, b"quart page")
        assert_upgrade_required(await http_request(server.url, "/echo"), "/echo")
        async with connect(server.url + "/echo") as client:
            await client.send_message("hi")
            assert await client.get_message() == "hi"
        await server.shutdown()
    assert events == ["http startup", "ws startup", "ws shutdown", "http shutdown"]
