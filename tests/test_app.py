"""The App on a real hypercorn trio server: routes, views, lifespan, shutdown."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from trio_bocaws import (
    App,
    AppConfig,
    WebSocket,
    WebSocketConfig,
    WebSocketDisconnect,
    WebSocketStateError,
)
from trio_bocaws._errors import leaves

from .conftest import Server, client_reason, close_code, connect
from .raw_client import http_get

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

Serve = Callable[..., Awaitable[Server]]
TIMEOUT = 5


async def refused(url: str, **options: Any) -> ConnectionRejected:
    """Connect, expecting the handshake to be refused; return what the client saw."""
    with pytest.raises(ConnectionRejected) as info:
        async with connect(url, **options):
            pass  # pragma: no cover
    return info.value


# -- Routing -----------------------------------------------------------------------------


async def test_decorated_and_added_routes(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/decorated")
    async def decorated(ws: WebSocket) -> None:
        await ws.send_text("decorated")

    async def assembled(ws: WebSocket) -> None:
        await ws.send_text("added")

    app.add_websocket_route("/added", assembled)
    assert [route.pattern for route in app.routes] == ["/decorated", "/added"]
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        for path, expected in [("/decorated", "decorated"), ("/added", "added")]:
            async with connect(server.url + path) as client:
                assert await client.get_message() == expected


async def test_path_parameters_with_converters(serve: Serve) -> None:
    app = App()
    seen: list[tuple[Any, ...]] = []

    @app.websocket_route("/rooms/{room}/{number:int}/{ratio:float}/{key:uuid}/{rest:path}")
    async def room(
        ws: WebSocket, room: str, number: int, ratio: float, key: uuid.UUID, rest: str
    ) -> None:
        seen.append((room, number, ratio, key, rest))
        await ws.send_text("ok")

    server = await serve(app)
    key = uuid.uuid4()
    with trio.fail_after(TIMEOUT):
        async with connect(f"{server.url}/rooms/lobby/42/0.5/{key}/a/b/c") as client:
            assert await client.get_message() == "ok"
        # /rooms/lobby/x/... does not match {number:int}: no route, 403.
        assert (await refused(f"{server.url}/rooms/lobby/x/0.5/{key}/a")).status_code == 403
    assert seen == [("lobby", 42, 0.5, key, "a/b/c")]


async def test_query_parameters_are_converted_by_annotation(serve: Serve) -> None:
    app = App()
    seen: list[dict[str, Any]] = []

    @app.websocket_route("/chat/{room}", value_type="json")
    async def chat(
        ws: WebSocket,
        room: str,
        anonymous: bool = False,
        limit: int = 10,
        ratio: float | None = None,
        name: str = "guest",
    ) -> None:
        seen.append(
            {"room": room, "anonymous": anonymous, "limit": limit, "ratio": ratio, "name": name}
        )
        await ws.send({"ok": True})

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(f"{server.url}/chat/lobby?anonymous=yes&limit=3&ratio=1.5") as c:
            assert json.loads(await c.get_message()) == {"ok": True}
        async with connect(f"{server.url}/chat/den") as client:
            await client.get_message()
    assert seen == [
        {"room": "lobby", "anonymous": True, "limit": 3, "ratio": 1.5, "name": "guest"},
        {"room": "den", "anonymous": False, "limit": 10, "ratio": None, "name": "guest"},
    ]


async def test_missing_or_invalid_query_values_refuse_the_handshake(serve: Serve) -> None:
    app = App()
    called: list[str] = []

    @app.websocket_route("/feed")
    async def feed(ws: WebSocket, since: int, verbose: bool = False) -> None:
        called.append("view")  # pragma: no cover

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        missing = await refused(f"{server.url}/feed")
        invalid = await refused(f"{server.url}/feed?since=yesterday")
        bad_bool = await refused(f"{server.url}/feed?since=1&verbose=maybe")
    assert (missing.status_code, missing.body) == (400, b"missing query parameter 'since'")
    assert invalid.status_code == 400
    assert invalid.body == b"query parameter 'since' must be an int, got 'yesterday'"
    assert bad_bool.body is not None and b"'verbose' must be a bool" in bad_bool.body
    assert called == []


async def test_no_route_is_http_403(serve: Serve) -> None:
    app = App()
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        rejected = await refused(server.url + "/nowhere")
    assert rejected.status_code == 403
    assert rejected.body == b"no WebSocket route for /nowhere"


def test_a_view_must_be_async() -> None:
    app = App()

    def not_async(ws: WebSocket) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="not_async must be an async function"):
        app.add_websocket_route("/x", not_async)  # type: ignore[arg-type]
    assert app.routes == ()


def test_two_routes_with_one_pattern_are_refused() -> None:
    app = App()

    async def first(ws: WebSocket, room: str) -> None:
        pass  # pragma: no cover

    async def second(ws: WebSocket, name: str) -> None:
        pass  # pragma: no cover

    app.add_websocket_route("/rooms/{room}", first)
    with pytest.raises(ValueError, match=r"already exists.*first"):
        app.add_websocket_route("/rooms/{name}", second)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("no-slash", "must be a str starting with '/'"),
        ("/a/{x:hex}", "unknown converter 'hex'.*known: str, int, float, path, uuid"),
        ("/a/{x}/{x}", "appears twice"),
        ("/a/{1x}", "invalid parameter name"),
        ("/a/{x", "unbalanced braces"),
    ],
)
def test_bad_patterns_name_the_problem(pattern: str, message: str) -> None:
    async def view(ws: WebSocket, x: str = "") -> None:
        pass  # pragma: no cover

    with pytest.raises(ValueError, match=message):
        App().add_websocket_route(pattern, view)


def test_view_parameters_must_fit_the_pattern() -> None:
    app = App()

    async def no_room(ws: WebSocket) -> None:
        pass  # pragma: no cover

    async def listy(ws: WebSocket, tags: list[str]) -> None:
        pass  # pragma: no cover

    async def no_socket() -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match=r"no_room has no parameter for path parameter.*room"):
        app.add_websocket_route("/rooms/{room}", no_room)
    with pytest.raises(TypeError, match="'tags' is annotated"):
        app.add_websocket_route("/tags", listy)
    with pytest.raises(TypeError, match="must take the WebSocket as first parameter"):
        app.add_websocket_route("/none", no_socket)


async def test_app_defaults_and_route_overrides(serve: Serve) -> None:
    app = App(config=AppConfig(websocket=WebSocketConfig(receive_type="json", send_type="json")))

    @app.websocket_route("/default")
    async def default(ws: WebSocket) -> None:
        await ws.send({"got": await ws.receive()})

    @app.websocket_route("/text", value_type="text")
    async def text(ws: WebSocket) -> None:
        await ws.send((await ws.receive()).upper())

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/default") as client:
            await client.send_message("[1]")
            assert json.loads(await client.get_message()) == {"got": [1]}
        async with connect(server.url + "/text") as client:
            await client.send_message("[1]")
            assert await client.get_message() == "[1]".upper()


# -- How a view ends ---------------------------------------------------------------------


async def test_auto_accept_still_lets_a_view_reject(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/private")
    async def private(ws: WebSocket, token: str = "") -> None:
        if token != "secret":
            await ws.reject(403, body="bad token")
            return
        await ws.send_text("welcome")

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        rejected = await refused(server.url + "/private?token=guess")
        async with connect(server.url + "/private?token=secret") as client:
            assert await client.get_message() == "welcome"
    assert (rejected.status_code, rejected.body) == (403, b"bad token")


async def test_a_view_returning_without_closing_closes_1000(serve: Serve) -> None:
    app = App()

    @app.websocket_route("/hello")
    async def hello(ws: WebSocket) -> None:
        await ws.send_text("hello")

    @app.websocket_route("/silent")
    async def silent(ws: WebSocket) -> None:
        pass

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        for path in ("/hello", "/silent"):
            async with connect(server.url + path) as client:
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await client.get_message()
                assert close_code(closed) == 1000


async def test_a_view_that_raises_closes_1011_logs_once_and_the_server_goes_on(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.websocket_route("/fail")
    async def fail(ws: WebSocket) -> None:
        await ws.receive_text()
        raise ValueError("the view broke")

    @app.websocket_route("/fine")
    async def fine(ws: WebSocket) -> None:
        await ws.send_text("fine")

    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO):
        async with connect(server.url + "/fail") as client:
            await client.send_message("go")
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        async with connect(server.url + "/fine") as client:
            assert await client.get_message() == "fine"
    assert close_code(closed) == 1011
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "trio_bocaws"
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ValueError
    assert "fail" in errors[0].getMessage()


async def test_a_bocadillo_view_with_its_own_async_with(serve: Serve) -> None:
    app = App()
    ended: list[int | None] = []
    done = trio.Event()

    @app.websocket_route("/echo")
    async def echo(ws: WebSocket) -> None:
        async with ws:
            async for message in ws:
                await ws.send(message)
        ended.append(ws.close_code)
        done.set()

    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/echo") as client:
            await client.send_message("hi")
            assert await client.get_message() == "hi"
            await client.aclose(1001, "bye")
        await done.wait()
    assert ended == [1001]


async def test_connection_tasks_end_with_the_connection_and_their_errors_close_1011(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    cancelled = trio.Event()

    async def ticker(ws: WebSocket) -> None:
        try:
            while True:
                await ws.send_text("tick")
                await trio.sleep(0.01)
        finally:
            cancelled.set()

    @app.websocket_route("/ticks")
    async def ticks(ws: WebSocket) -> None:
        ws.nursery.start_soon(ticker, ws)
        await ws.receive_text()  # until the client says stop

    async def broken() -> None:
        await trio.sleep(0.05)
        raise LookupError("background task broke")

    @app.websocket_route("/broken")
    async def with_broken_task(ws: WebSocket) -> None:
        ws.nursery.start_soon(broken)
        await ws.receive_text()

    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR):
        async with connect(server.url + "/ticks") as client:
            assert await client.get_message() == "tick"
            await client.send_message("stop")
            await cancelled.wait()
        async with connect(server.url + "/broken") as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
    assert close_code(closed) == 1011
    [record] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert record.exc_info is not None and record.exc_info[0] is LookupError  # unwrapped


async def test_uncaught_client_close_codes_are_logged_as_information(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    done = trio.Event()

    @app.websocket_route("/strict", caught_close_codes=())
    async def strict(ws: WebSocket) -> None:
        try:
            async for _ in ws:
                pass  # pragma: no cover
        finally:
            done.set()

    server = await serve(app)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="trio_bocaws"):
        async with connect(server.url + "/strict") as client:
            await client.aclose(4009, "went away")
        await done.wait()
        await trio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records if r.name == "trio_bocaws"]
    reason = ": went away" if client_reason("went away") else ""
    assert any(
        f"left with close code 4009 (not in caught_close_codes){reason}" in m for m in messages
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- HTTP ----------------------------------------------------------------------------------


async def test_http_is_404_by_default_or_handed_to_another_app(serve: Serve) -> None:
    async def page(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"17")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<html>page</html>"})

    plain = await serve(App())
    with_page = await serve(App(page))
    with trio.fail_after(TIMEOUT):
        assert await http_get(plain.url, "/") == (404, b"Not Found")
        assert await http_get(with_page.url, "/") == (200, b"<html>page</html>")


# -- Lifespan and the app-wide nursery ------------------------------------------------------


async def test_startup_shutdown_and_an_app_wide_ticker(serve: Serve) -> None:
    app = App()
    events: list[str] = []
    clients: set[WebSocket] = set()

    async def ticker() -> None:
        count = 0
        while True:
            await trio.sleep(0.02)
            count += 1
            for ws in list(clients):
                try:
                    await ws.send_text(f"tick {count}")
                except WebSocketDisconnect:
                    clients.discard(ws)

    @app.on_startup
    async def start() -> None:
        events.append("startup")
        app.nursery.start_soon(ticker)

    @app.on("shutdown")
    def stop() -> None:
        events.append("shutdown")

    @app.websocket_route("/ticks")
    async def ticks(ws: WebSocket) -> None:
        await ws.accept()
        clients.add(ws)
        try:
            await ws.receive_text()
        finally:
            clients.discard(ws)

    with pytest.raises(WebSocketStateError, match="between startup and shutdown"):
        app.nursery  # noqa: B018
    server = await serve(app)
    with trio.fail_after(TIMEOUT):
        async with (
            connect(server.url + "/ticks") as first,
            connect(server.url + "/ticks") as second,
        ):
            assert str(await first.get_message()).startswith("tick ")
            assert str(await second.get_message()).startswith("tick ")
        await server.shutdown()
    assert events == ["startup", "shutdown"]


async def test_a_failing_startup_callback_stops_the_server_from_starting(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    import hypercorn.config
    import hypercorn.trio
    from hypercorn.utils import LifespanFailureError

    app = App()

    @app.on_startup
    async def connect_to_database() -> None:
        raise ConnectionRefusedError("database is down")

    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as info:
        await hypercorn.trio.serve(app, config)
    failure, _ = info.value.split(LifespanFailureError)
    assert failure is not None
    [error] = leaves(failure)
    assert "connect_to_database failed: ConnectionRefusedError('database is down')" in str(error)


async def test_behind_a_root_path_the_url_has_it_once_and_routes_without_it(
    serve: Serve,
) -> None:
    app = App()

    @app.websocket_route("/whereami")
    async def whereami(ws: WebSocket) -> None:
        await ws.send_text(ws.url.path)

    server = await serve(app, root_path="/prefix")
    with trio.fail_after(TIMEOUT):
        async with connect(server.url + "/prefix/whereami") as client:
            assert await client.get_message() == "/prefix/whereami"


async def test_a_lifespan_cancelled_from_outside_ends_with_a_plain_cancellation() -> None:
    """When the server gives up after startup (it could not bind, say), the lifespan ends
    with the cancellation itself: a group around it is what hypercorn 0.17 logged as a
    "Lifespan error" with a traceback, before its one-line bind error."""
    app = App()
    to_app, from_server = trio.open_memory_channel[dict[str, Any]](4)
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    raised: list[BaseException] = []

    async def lifespan() -> None:
        try:
            await app({"type": "lifespan"}, from_server.receive, send)
        except BaseException as exc:
            raised.append(exc)
            raise

    to_app.send_nowait({"type": "lifespan.startup"})
    with trio.fail_after(5):
        with trio.CancelScope() as server:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lifespan)
                while sent != ["lifespan.startup.complete"]:
                    await trio.lowlevel.checkpoint()
                server.cancel()
    assert [type(exc) for exc in raised] == [trio.Cancelled]
