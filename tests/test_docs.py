"""The documentation's code: every snippet in docs/ runs here, and is judged by what a client
sees (close codes, reasons, HTTP statuses and bodies, messages).

The pages include their code from docs/snippets/ (and examples/) with ``literalinclude``;
``test_every_code_block_comes_from_a_tested_file`` keeps it that way.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed as ClientSawClose
from trio_websocket import ConnectionRejected

import trio_bocaws
from trio_bocaws import (
    Broadcast,
    ServerConfig,
    WebSocketConfig,
    hypercorn_fixes,
    serve,
    testing,
)
from trio_bocaws.testing import ConnectionClosed, HandshakeRejected, TestClient, open_websocket

from .components import require
from .conftest import assert_certificate_refused, close_of
from .redis_server import redis_server
from .subprocesses import server_process

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
EXAMPLES = ROOT / "examples"
TIMEOUT = 5

pytest_plugins = ["pytester"]


def snippet(name: str) -> ModuleType:
    """Import docs/snippets/<name>.py afresh (its app and module state are new each time)."""
    path = SNIPPETS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_snippets_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def chat_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make ``import chat.app`` find examples/chat, as in the tutorial's project layout."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    try:
        yield
    finally:
        for name in [name for name in sys.modules if name == "chat" or name.startswith("chat.")]:
            del sys.modules[name]


async def refused(client: TestClient, path: str, **options: Any) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as info:
        async with client.websocket_connect(path, **options):
            pass  # pragma: no cover
    return info.value


async def closed_with(ws: testing.WebSocketSession) -> tuple[int, str]:
    """Read until the app closes; return the close code and reason the client saw."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.receive()
    return info.value.code, info.value.reason


# -- The pages themselves ------------------------------------------------------------------

_FENCE = re.compile(r"^(`{3,}|:{3,})(.*)$")
# Blocks that are not code: shell sessions, output, and MyST directives that hold prose.
_NOT_CODE = {"console", "text", "none"}
_PROSE_DIRECTIVES = {"{note}", "{warning}", "{tip}", "{important}", "{seealso}", "{toctree}"}


def _pages() -> list[Path]:
    return sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)


def _blocks(page: Path) -> Iterator[tuple[str, str, list[str]]]:
    """(fence info, argument, body lines) of each top-level fenced block of a page."""
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        found = _FENCE.match(lines[index])
        index += 1
        if found is None:
            continue
        fence, info = found.group(1), found.group(2).strip()
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index])
            index += 1
        index += 1
        directive, _, argument = info.partition(" ")
        yield directive, argument.strip(), body


def test_every_code_block_comes_from_a_tested_file() -> None:
    tests = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("*.py")}
    this_file, all_tests = tests["test_docs.py"], "\n".join(tests.values())
    included: set[Path] = set()
    for page in _pages():
        for directive, argument, body in _blocks(page):
            where = f"{page.relative_to(ROOT)}: {directive} {argument}"
            if directive in _NOT_CODE or directive in _PROSE_DIRECTIVES:
                continue
            if directive == "{eval-rst}":
                # Only the API reference, and only autodoc and py-domain directives.
                assert page.name == "api.md", where
                for line in body:
                    if line.startswith(".."):
                        assert re.match(r"\.\. (auto\w+|py:\w+|module)::", line), where
                    assert not line.rstrip().endswith("::"), f"{where}: a literal block"
                continue
            assert directive == "{literalinclude}", f"{where}: code must be included from a file"
            target = (page.parent / argument).resolve()
            assert target.is_file(), where
            included.add(target)
            if target.parent == SNIPPETS:
                assert f'"{target.stem}"' in this_file or f'"{target.name}"' in this_file, (
                    f"{where}: no test in tests/test_docs.py uses {target.name}"
                )
            else:
                # An example: tests/test_examples.py and tests/test_cli.py run them.
                package = target.parent.relative_to(ROOT).as_posix().replace("/", ".")
                assert package.startswith("examples") and package in all_tests, where
    # Every snippet is shown somewhere: none is left over from an old version of a page.
    snippets = {path for path in SNIPPETS.iterdir() if path.suffix in {".py", ".conf", ".toml"}}
    assert snippets <= included


def test_the_api_reference_covers_the_public_api() -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    for name in trio_bocaws.__all__:
        assert re.search(rf"\.\. (auto\w+|py:\w+):: trio_bocaws\.{name}\b", api), name
    for module in (testing, hypercorn_fixes):
        assert f".. automodule:: {module.__name__}\n   :members:" in api
        for name in module.__all__:
            assert getattr(module, name).__doc__, f"{module.__name__}.{name} has no docstring"


def test_the_defaults_the_pages_state() -> None:
    """Numbers the prose gives; if one changes, change the pages with it."""
    config = WebSocketConfig()
    assert config.caught_close_codes == trio_bocaws.CloseCodes((1000, 1001))
    assert (config.close_timeout, config.max_buffered_messages) == (5.0, 16)
    assert (config.cancelled_close_code, config.cancelled_close_reason) == (1001, "")
    assert (config.shutdown_close_code, config.shutdown_close_reason) == (
        1001,
        "server shutting down",
    )
    assert config.idle_timeout is None
    server = ServerConfig()
    assert server.bind == ("127.0.0.1:8000",)
    assert (server.graceful_timeout, server.max_message_size) == (5.0, 2**20)
    assert (server.ping_interval, server.read_timeout) == (None, None)
    assert server.write_timeout == hypercorn_fixes.DEFAULT_WRITE_TIMEOUT == 30.0
    assert testing.DEFAULT_TIMEOUT == 5.0
    assert hypercorn_fixes.ENVIRONMENT_VARIABLE == "TRIO_BOCAWS_HYPERCORN_FIXES"


def test_the_close_code_table() -> None:
    """guide/closing.md's table says which codes a server may send: check each row."""
    page = (DOCS / "guide" / "closing.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d{4})(?:-(\d{4}))? \| [^|]+ \| (yes|no)[^|]* \|", page, re.M)
    assert len(rows) >= 15
    for first, last, may_send in rows:
        for code in {int(first), int(last or first)}:
            if may_send == "yes":
                WebSocketConfig(cancelled_close_code=code)
            else:
                with pytest.raises(ValueError, match=str(code)):
                    WebSocketConfig(cancelled_close_code=code)


# -- Tutorial ------------------------------------------------------------------------------


async def test_tutorial_echo_and_its_client(capsys: pytest.CaptureFixture[str]) -> None:
    echo, client = snippet("tutorial_echo"), snippet("tutorial_client")
    with trio.fail_after(TIMEOUT):
        async with testing.serving(echo.app) as server:
            await client.main(server.url + "/echo")
    assert capsys.readouterr().out.splitlines() == ["You said: hello", "You said: trio"]


@pytest.mark.usefixtures("chat_on_path")
async def test_tutorial_chat_test() -> None:
    await snippet("tutorial_test_chat").test_everyone_in_the_room_hears_a_message()


async def test_tutorial_typed_chat_test(monkeypatch: pytest.MonkeyPatch) -> None:
    # `from typed_chat import app`, as in the tutorial's project directory.
    monkeypatch.setitem(sys.modules, "typed_chat", snippet("tutorial_typed_chat"))
    await snippet("tutorial_test_typed_chat").test_messages_are_checked_then_heard()


# -- Guide: views --------------------------------------------------------------------------


async def test_views_parameters_and_what_a_client_sees_on_bad_values() -> None:
    client = TestClient(snippet("guide_views").app)
    key = uuid.uuid4()
    expected: dict[str, Any] = {
        "/feeds/news?since=5&verbose=yes": {"feed": "news", "since": 5, "verbose": True},
        "/feeds/news": {"feed": "news", "since": 0, "verbose": False},
        "/items/42": {"item": 42},
        "/files/2024/report.txt": {"location": "2024/report.txt"},
        f"/sessions/{key}": {"key": str(key), "version": 4},
        "/players/7": {"player": 7},
        "/search?q=trio": {"q": "trio", "limit": None},
        "/search?q=trio&limit=3": {"q": "trio", "limit": 3},
        "/status": "ok",
    }
    for path, message in expected.items():
        async with client.websocket_connect(path) as ws:
            if path == "/status":  # a text route in a JSON app
                assert await ws.receive_text() == message
            else:
                assert await ws.receive_json() == message
    bad = {
        "/feeds/news?since=yesterday": (
            400,
            "query parameter 'since' must be an int, got 'yesterday'",
        ),
        "/feeds/news?verbose=maybe": (
            400,
            "query parameter 'verbose' must be a bool (true/false, 1/0, yes/no, on/off), "
            "got 'maybe'",
        ),
        "/search": (400, "missing query parameter 'q'"),
        "/players/seven": (400, "path parameter 'player' is invalid: 'seven'"),
        "/items/forty-two": (403, "no WebSocket route for /items/forty-two"),
        "/sessions/not-a-uuid": (403, "no WebSocket route for /sessions/not-a-uuid"),
    }
    for path, (status, body) in bad.items():
        rejection = await refused(client, path)
        assert (rejection.status, rejection.body.decode()) == (status, body), path


# -- Guide: connections --------------------------------------------------------------------


async def test_accepting_rejecting_and_closing() -> None:
    module = snippet("guide_connections")
    client = TestClient(module.app)
    rejection = await refused(client, "/private")
    assert (rejection.status, rejection.body) == (401, b"send a valid api-key header")
    async with client.websocket_connect("/private", headers={"api-key": "s3kr3t"}) as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "authorized: hi"

    async with client.websocket_connect("/countdown") as ws:
        assert [await ws.receive_text() for _ in range(3)] == ["3", "2", "1"]
        assert await closed_with(ws) == (1000, "liftoff")
    rejection = await refused(client, "/countdown?start=99")
    assert (rejection.status, rejection.body) == (400, b"start at 10 at most")

    async with client.websocket_connect("/rooms/den") as ws:
        assert await ws.receive_text() == "welcome to den"
    rejection = await refused(client, "/rooms/attic")
    assert (rejection.status, rejection.body) == (404, b"there is no room called 'attic'")

    async with TestClient(module.plain_asgi_app).websocket_connect("/") as ws:
        await ws.send_json({"a": 1})
        assert await ws.receive_json() == {"echo": {"a": 1}}


async def test_how_a_view_that_never_answers_ends() -> None:
    """The table in guide/connections.md: a view that ends before answering."""
    from trio_bocaws import App, RejectConnection, WebSocket

    app = App()

    @app.websocket_route("/auto-returns")
    async def auto_returns(ws: WebSocket) -> None:
        pass

    @app.websocket_route("/auto-raises")
    async def auto_raises(ws: WebSocket) -> None:
        raise LookupError("bug")

    @app.websocket_route("/manual-returns", auto_accept=False)
    async def manual_returns(ws: WebSocket) -> None:
        pass

    @app.websocket_route("/manual-raises", auto_accept=False)
    async def manual_raises(ws: WebSocket) -> None:
        raise LookupError("bug")

    @app.websocket_route("/manual-cancelled", auto_accept=False)
    async def manual_cancelled(ws: WebSocket) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await trio.sleep_forever()
        raise AssertionError("not reached")  # pragma: no cover

    @app.websocket_route("/refused-after-accept")
    async def refused_after_accept(ws: WebSocket) -> None:
        await ws.accept()
        raise RejectConnection(403, "too late for a status")

    client = TestClient(app, raise_app_exceptions=False)
    async with client.websocket_connect("/refused-after-accept") as ws:
        assert await closed_with(ws) == (1008, "")
    for path, code in [("/auto-returns", 1000), ("/auto-raises", 1011)]:
        async with client.websocket_connect(path) as ws:
            assert await closed_with(ws) == (code, "")
    for path, status in [("/manual-returns", 403), ("/manual-raises", 500)]:
        assert (await refused(client, path)).status == status


async def test_a_view_cancelled_before_answering_is_refused_with_503() -> None:
    from trio_bocaws import App, WebSocket

    app = App()
    waiting = trio.Event()

    @app.websocket_route("/slow", auto_accept=False)
    async def slow(ws: WebSocket) -> None:
        waiting.set()
        await trio.sleep_forever()

    async with TestClient(app) as client, trio.open_nursery() as nursery:

        async def shut_down_when_waiting() -> None:
            await waiting.wait()
            client.begin_shutdown()

        nursery.start_soon(shut_down_when_waiting)
        assert (await refused(client, "/slow")).status == 503


# -- Guide: requests -----------------------------------------------------------------------


async def test_inspecting_the_request() -> None:
    client = TestClient(snippet("guide_requests").app)
    async with client.websocket_connect(
        "/whoami?tag=a&tag=b",
        headers={"User-Agent": "docs/1.0"},
        subprotocols=["chat.v1", "chat.v2"],
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        assert await ws.receive_json() == {
            "url": "ws://testserver/whoami?tag=a&tag=b",
            "scheme": "ws",
            "path": "/whoami",
            "tags": ["a", "b"],
            "user_agent": "docs/1.0",
            "client": "127.0.0.1",
            "offered": ["chat.v1", "chat.v2"],
            "subprotocol": "chat.v2",
        }
    async with client.websocket_connect("/whoami") as ws:
        assert ws.subprotocol is None
        assert (await ws.receive_json())["subprotocol"] is None


# -- Guide: messages -----------------------------------------------------------------------


async def test_receiving_and_sending_each_value_type() -> None:
    client = TestClient(snippet("guide_messages").app)
    async with client.websocket_connect("/shout") as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "HELLO"
    async with client.websocket_connect("/double") as ws:
        await ws.send_bytes(b"ab")
        assert await ws.receive_bytes() == b"abab"
    async with client.websocket_connect("/sum") as ws:
        await ws.send_json([1, 2, 3.5])
        assert await ws.receive_text() == '{"sum":6.5}'  # compact JSON, in a text frame
        await ws.send_bytes(b"[1, 1]")  # JSON may come in a binary frame too
        assert await ws.receive_json() == {"sum": 2}
    async with client.websocket_connect("/describe") as ws:
        await ws.send_text('{"a": 1}')
        assert await ws.receive_text() == "a dict"
    async with client.websocket_connect("/upload") as ws:
        await ws.send_text("photo.jpg")
        await ws.send_bytes(b"\xff" * 10)
        assert await ws.receive_json() == {"name": "photo.jpg", "size": 10}
    async with client.websocket_connect("/raw") as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "You said: hi"


async def test_a_frame_of_the_wrong_type_closes_1003(caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(snippet("guide_messages").app)
    with caplog.at_level(logging.INFO, logger="trio_bocaws"):
        async with client.websocket_connect("/shout") as ws:
            await ws.send_bytes(b"not text")
            assert await closed_with(ws) == (1003, "expected a text message")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert "expected a text message but the client sent a bytes message" in record.getMessage()


# -- Guide: errors and closing -------------------------------------------------------------


async def test_errors_close_codes_and_clients_that_leave(caplog: pytest.LogCaptureFixture) -> None:
    module = snippet("guide_closing")
    client = TestClient(module.app)
    async with client.websocket_connect("/average") as ws:
        await ws.send_text("4")
        assert await ws.receive_text() == "average: 4"
        await ws.send_text("four")
        assert await ws.receive_text() == "that is not JSON; try again"
        await ws.send_text("5")
        assert await ws.receive_text() == "average: 4.5"
        await ws.send_text('"six"')
        assert await closed_with(ws) == (4001, "numbers only")
    async with client.websocket_connect("/average?limit=1") as ws:
        await ws.send_text("1")
        await ws.receive_text()
        await ws.send_text("2")
        assert await closed_with(ws) == (4002, "at most 1 numbers")

    with caplog.at_level(logging.INFO):
        async with client.websocket_connect("/ratio") as ws:
            await ws.send_text("3/4")
            assert await ws.receive_text() == "0.75"
            await ws.send_text("1/0")
            assert await closed_with(ws) == (1011, "")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.name for r in errors] == ["trio_bocaws"]
        assert errors[0].exc_info is not None and errors[0].exc_info[0] is ZeroDivisionError

        caplog.clear()
        async with client.websocket_connect("/tracked") as ws:
            await ws.close(4100, "going")
        async with client.websocket_connect("/tracked") as ws:
            await ws.close(1000)
        async with client.websocket_connect("/goodbyes") as ws:
            await ws.close(4200, "bye")
        messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("averages", "client left with 4100 'going'") in messages
    assert not any("client left with 1000" in message for _, message in messages)
    assert ("averages", "client left with 4200") in messages
    # An uncaught code is logged once by the App, as information.
    assert any(
        name == "trio_bocaws" and "left with close code 4100 (not in caught_close_codes)" in text
        for name, text in messages
    )


async def test_close_before_accept_accepts_first_or_refuses_with_a_status() -> None:
    from trio_bocaws import WebSocket

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        query = dict(pair.split("=") for pair in scope["query_string"].decode().split("&"))
        ws = WebSocket(scope, receive, send, auto_accept=query.get("auto") != "no")
        await ws.close(int(query["code"]), "bye")

    client = TestClient(app)
    for code in (4000, 1000):  # accepted first, as Bocadillo did: the client sees the code
        async with client.websocket_connect(f"/?code={code}") as ws:
            assert await closed_with(ws) == (code, "bye")
    assert (await refused(client, "/?code=404")).status == 404  # an HTTP status: refused
    assert (await refused(client, "/?code=4000&auto=no")).status == 403


# -- Guide: rooms and scaling out ----------------------------------------------------------

# coredis 6.9 leaves the memory streams of a failed connection unclosed; they warn when
# collected (see tests/test_broadcast_redis.py). Tests that make coredis fail collect them
# before they end, under this filter.
_COREDIS_LEFTOVERS = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function MemoryObject:pytest.PytestUnraisableExceptionWarning"
)
_PAD = "x" * 65536  # big messages fill a client's TCP buffers after a few of them


def test_the_defaults_the_rooms_page_states() -> None:
    config = trio_bocaws.BroadcastConfig()
    assert (config.buffer_size, config.on_overflow) == (256, "drop_oldest")
    assert (config.connect_timeout, config.reconnect_delay, config.max_reconnect_delay) == (
        5.0,
        0.1,
        5.0,
    )
    assert trio_bocaws.Broadcast().url == "memory://"


async def test_a_hub_on_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(TIMEOUT):
        await snippet("rooms_hub").main()
    assert capsys.readouterr().out.splitlines() == [
        "news: trio 0.35 is out",
        "weather: that's all",
        "subscribers left: 0",
    ]


async def test_rooms_members_and_leaving() -> None:
    module = snippet("rooms_app")
    hub = module.hub
    assert not hub.connected
    async with TestClient(module.app) as client:
        assert hub.connected  # connected at startup
        async with client.websocket_connect("/rooms/lobby?user=ada") as ada:
            assert await ada.receive_json() == {"room": "lobby", "members": 1}
            async with (
                client.websocket_connect("/rooms/lobby?user=bob") as bob,
                client.websocket_connect("/rooms/attic?user=eve") as eve,
            ):
                assert await bob.receive_json() == {"room": "lobby", "members": 2}
                assert await eve.receive_json() == {"room": "attic", "members": 1}
                await ada.send_json("hi")
                for member in (ada, bob):
                    assert await member.receive_json() == {"user": "ada", "said": "hi"}
                with pytest.raises(trio.TooSlowError):
                    await eve.receive(timeout=0.1)  # another room

                # A str goes out as it is, not JSON-encoded, whatever the routes speak.
                await hub.room("lobby").send("plain text")
                assert await ada.receive_text() == "plain text"
                assert await bob.receive_text() == "plain text"

                await bob.send_json("leave")
                assert await bob.receive_json() == {"left": "lobby"}
                assert hub.room("lobby").members == 1
                await ada.send_json("still there?")
                assert await ada.receive_json() == {"user": "ada", "said": "still there?"}
                with pytest.raises(trio.TooSlowError):
                    await bob.receive(timeout=0.1)  # left the room, still connected
                await bob.send_json("bob here")  # may still send to it
                assert await ada.receive_json() == {"user": "bob", "said": "bob here"}
            await trio.testing.wait_all_tasks_blocked()
            # Their connections ended: so did their memberships.
            assert (hub.room("lobby").members, hub.room("attic").members) == (1, 0)


@_COREDIS_LEFTOVERS
async def test_a_backend_the_app_cannot_reach_stops_it_from_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    monkeypatch.setenv("BROADCAST_URL", url)
    module = snippet("rooms_redis")
    with trio.fail_after(TIMEOUT), pytest.raises(RuntimeError, match=f"cannot connect to {url}"):
        async with TestClient(module.app):
            pass  # pragma: no cover
    gc.collect()  # coredis' leftovers warn here, under the filter


async def _wait_for_members(room: trio_bocaws.Room, count: int) -> None:
    while room.members < count:  # noqa: ASYNC110 - a count kept by the hub, not an event
        await trio.sleep(0.01)


async def test_a_member_that_falls_behind_is_closed_with_1013(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """rooms.md: on_overflow="close". The slow client reads nothing until it was closed."""
    module = snippet("rooms_slow")
    assert (module.hub.config.buffer_size, module.hub.config.on_overflow) == (64, "close")
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="trio_bocaws"):
        async with (
            testing.serving(module.app) as server,
            open_websocket(server.url + "/prices") as slow,
            open_websocket(server.url + "/prices") as healthy,
        ):
            await _wait_for_members(module.prices, 2)
            await module.publish("ACME", 12.5)
            assert await healthy.get_message() == '{"symbol":"ACME","price":12.5}'
            assert await slow.get_message() == '{"symbol":"ACME","price":12.5}'
            # Publish in step with the healthy member, which reads; the slow one does not.
            published = 0
            while "room messages behind" not in caplog.text:
                await module.prices.send_text(f"{published} {_PAD}")
                assert await healthy.get_message() == f"{published} {_PAD}"
                published += 1
            assert published > 64
            # The slow client reads again: what was on its way, in order, then the close.
            received = []
            with pytest.raises(ClientSawClose) as closed:
                while True:
                    received.append(int((await slow.get_message()).split()[0]))
            assert received == list(range(len(received)))
            assert len(received) < published - 64  # the waiting 64 and more never came
            assert close_of(closed) == (1013, "too slow: room messages piled up")
            # The healthy member was never held up, and stays.
            await module.prices.send_text("after")
            assert await healthy.get_message() == "after"
            assert module.prices.members == 1


async def test_a_member_that_falls_behind_loses_its_oldest_messages_by_default() -> None:
    """rooms.md: drop_oldest. The slow client misses messages but stays connected."""
    module = snippet("rooms_app")
    room = module.hub.room("feed")
    # About 40 MB go to the healthy client: under a second, unless the machine is busy.
    with trio.fail_after(15):
        async with (
            testing.serving(module.app) as server,
            open_websocket(server.url + "/rooms/feed?user=slow") as slow,
            open_websocket(server.url + "/rooms/feed?user=healthy") as healthy,
        ):
            await _wait_for_members(room, 2)
            assert json.loads(await slow.get_message()) == {"room": "feed", "members": 1}
            assert json.loads(await healthy.get_message()) == {"room": "feed", "members": 2}
            total = 600  # 256 waiting, plus what TCP buffers hold, plus many more
            for number in range(total):
                await room.send({"n": number, "pad": _PAD})
                assert json.loads(await healthy.get_message())["n"] == number
            numbers: list[int] = []
            while not numbers or numbers[-1] != total - 1:
                numbers.append(json.loads(await slow.get_message())["n"])
            # In order, with a gap: the oldest waiting messages were dropped, the newest
            # 256 kept.
            assert numbers == sorted(numbers) and len(numbers) < total
            assert numbers[-256:] == list(range(total - 256, total))
            await slow.send_message(json.dumps("still here"))
            assert json.loads(await slow.get_message()) == {"user": "slow", "said": "still here"}


@_COREDIS_LEFTOVERS
async def test_rooms_across_workers_and_a_redis_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """rooms.md: two workers (two copies of the app, as two processes would have) share
    rooms through Redis; what is delivered before, during and after an outage."""
    async with redis_server(tmp_path) as redis:
        monkeypatch.setenv("BROADCAST_URL", redis.url)
        one, two = snippet("rooms_redis"), snippet("rooms_redis")
        hubs = (one.hub, two.hub)
        for hub in hubs:
            # A retry every second (the default starts at 0.1 s) leaves the test time to
            # publish before the hubs resubscribe.
            hub.config = attrs.evolve(hub.config, reconnect_delay=1.0, max_reconnect_delay=1.0)
        with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="trio_bocaws"):
            async with (
                TestClient(one.app) as first,
                TestClient(two.app) as second,
                first.websocket_connect("/chat/lobby?user=ada") as ada,
                second.websocket_connect("/chat/lobby?user=bob") as bob,
            ):
                await _wait_for_members(one.hub.room("lobby"), 1)
                await _wait_for_members(two.hub.room("lobby"), 1)
                await ada.send_json("before")
                for client in (ada, bob):
                    assert await client.receive_json() == {"user": "ada", "text": "before"}

                await redis.stop()
                while any(hub.connected for hub in hubs):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                await ada.send_json("during")
                assert await ada.receive_json() == {
                    "error": "not delivered; try again in a moment",
                    "text": "during",
                }

                await redis.start()
                await bob.send_json("gap")  # published, before either hub resubscribed
                for hub in hubs:
                    await hub.wait_connected()
                assert all(hub.connected for hub in hubs)
                await ada.send_json("after")
                # Had "during" or "gap" reached anyone, it would come first.
                for client in (ada, bob):
                    assert await client.receive_json() == {"user": "ada", "text": "after"}
        lost = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(lost) >= 2 and all(  # one a hub, and one more for each failed retry
            message.startswith(f"broadcast: lost {redis.url} (") for message in lost
        )
        assert all(message.endswith("); reconnecting") for message in lost)

        # Pub/sub ignores the database number: another app on database 1 shares the rooms.
        other = redis.url.removesuffix("/0") + "/1"
        with trio.fail_after(TIMEOUT):
            async with (
                Broadcast(redis.url) as here,
                Broadcast(other) as there,
                here.subscribe("news") as news,
            ):
                await there.publish("news", "heard on database 0")
                assert (await news.receive()).data == "heard on database 0"
    gc.collect()


# -- Trio: concurrency ---------------------------------------------------------------------


async def test_a_reader_and_a_writer_in_one_nursery() -> None:
    client = TestClient(snippet("trio_concurrency").app)
    async with client.websocket_connect("/clock?interval=0.01") as ws:
        assert await ws.receive_json() == {"tick": 1}
        assert await ws.receive_json() == {"tick": 2}
        await ws.send_json({"pause": True})
        message = await ws.receive_json()
        while message != {"paused": True}:  # a tick may have been on its way
            message = await ws.receive_json()
        with pytest.raises(trio.TooSlowError):
            await ws.receive_json(timeout=0.1)
        await ws.send_json({"pause": False})
        assert await ws.receive_json() == {"paused": False}
        assert "tick" in await ws.receive_json()


async def test_per_connection_tasks() -> None:
    client = TestClient(snippet("trio_concurrency").app)
    async with client.websocket_connect("/echo?heartbeat_every=0.02") as ws:
        assert await ws.receive_text() == "heartbeat"
        await ws.send_text("hi")
        message = await ws.receive_text()
        while message == "heartbeat":
            message = await ws.receive_text()
        assert message == "hi"


async def test_app_wide_tasks(autojump_clock: trio.testing.MockClock) -> None:
    module = snippet("trio_concurrency")
    async with TestClient(module.app) as client, client.websocket_connect("/announcements") as ws:
        start = trio.current_time()
        assert (await ws.receive_text(timeout=120)).startswith("server time: ")
        assert trio.current_time() - start <= module.ANNOUNCE_EVERY
        assert (await ws.receive_text(timeout=120)).startswith("server time: ")
    assert module.listeners == set()


async def test_one_task_receives_many_may_send() -> None:
    from trio_bocaws import App, WebSocket

    app = App()
    errors: list[BaseException] = []

    @app.websocket_route("/two-readers")
    async def two_readers(ws: WebSocket) -> None:
        await ws.accept()
        ws.nursery.start_soon(ws.receive_text)
        await trio.sleep(0.01)
        try:
            await ws.receive_text()
        except trio.BusyResourceError as exc:
            errors.append(exc)
        async with trio.open_nursery() as nursery:
            for number in range(3):
                nursery.start_soon(ws.send_text, f"from task {number}")

    async with TestClient(app).websocket_connect("/two-readers") as ws:
        assert sorted([await ws.receive_text() for _ in range(3)]) == [
            f"from task {number}" for number in range(3)
        ]
    assert len(errors) == 1


# -- Trio: timeouts ------------------------------------------------------------------------


async def test_timeouts_and_what_the_client_sees(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    module = snippet("trio_timeouts")
    client = TestClient(module.app, timeout=3600, raise_app_exceptions=False)
    async with client.websocket_connect("/quiz") as ws:
        assert await ws.receive_json() == {"question": "2 + 2"}
        await ws.send_json(4)
        assert await ws.receive_json() == {"question": "6 * 7"}
        start = trio.current_time()
        assert await ws.receive_json() == {"too_late": "6 * 7"}
        assert trio.current_time() - start == pytest.approx(module.ANSWER_TIME)
        assert await ws.receive_json() == {"score": 1}
        assert await closed_with(ws) == (1000, "")

    async with client.websocket_connect("/session") as ws:
        await ws.send_text("still here")
        assert await ws.receive_text() == "still here"
        assert await closed_with(ws) == (4008, "session expired, log in again")

    with caplog.at_level(logging.ERROR, logger="trio_bocaws"):
        async with client.websocket_connect("/report") as ws:
            assert await closed_with(ws) == (1011, "")
    assert caplog.records[0].exc_info is not None
    assert caplog.records[0].exc_info[0] is trio.TooSlowError

    async with TestClient(module.timed_app, timeout=3600).websocket_connect("/") as ws:
        start = trio.current_time()
        assert await closed_with(ws) == (1001, "")
        assert trio.current_time() - start == pytest.approx(module.SESSION_LIMIT)

    async with client.websocket_connect("/strict") as ws:
        start = trio.current_time()
        assert await closed_with(ws) == (1001, "idle: no message for 120 seconds")
        assert trio.current_time() - start == pytest.approx(120)
    assert module.strict.close_timeout == 2.0


async def test_a_receive_cut_short_by_a_timeout_loses_nothing() -> None:
    from trio_bocaws import App, WebSocket

    app = App()

    @app.websocket_route("/patient")
    async def patient(ws: WebSocket) -> None:
        with trio.move_on_after(0.05):
            await ws.receive_text()
        await ws.send_text("timed out")
        await ws.send_text(f"then got {await ws.receive_text()}")

    async with TestClient(app).websocket_connect("/patient") as ws:
        assert await ws.receive_text() == "timed out"
        await ws.send_text("late")
        assert await ws.receive_text() == "then got late"


async def test_a_cancelled_block_closes_with_the_configured_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_bocaws import WebSocket

    config = snippet("trio_timeouts").strict

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with trio.move_on_after(10):
            async with WebSocket(scope, receive, send, config=config) as ws:
                await ws.receive_text()

    async with TestClient(app, timeout=60).websocket_connect("/") as ws:
        assert await closed_with(ws) == (4008, "time is up")


# -- Trio: shutdown ------------------------------------------------------------------------


async def test_a_view_at_shutdown(capsys: pytest.CaptureFixture[str]) -> None:
    module = snippet("trio_shutdown")
    with trio.fail_after(TIMEOUT):
        async with (
            testing.serving(module.app, graceful_timeout=30) as server,
            open_websocket(server.url + "/presence/ada") as ws,
        ):
            await ws.send_message("hello")
            assert await ws.get_message() == "ada: hello"
            assert module.online == {"ada"}
            await server.shutdown()
            assert ws.closed is not None
            assert (ws.closed.code, ws.closed.reason) == (1001, "server shutting down")
    assert module.online == set()
    assert set(module.last_seen) == {"ada"}
    assert "shut down; 1 users seen" in capsys.readouterr().out


async def test_serving_inside_a_trio_program(capsys: pytest.CaptureFixture[str]) -> None:
    module = snippet("trio_shutdown")
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            config = ServerConfig(bind="127.0.0.1:0")
            [url] = await nursery.start(module.main, stop, config)
            async with open_websocket(url + "/presence/bob") as ws:
                stop.set()
                with pytest.raises(ClientSawClose) as closed:
                    await ws.get_message()
            assert close_of(closed)[0] == 1001
    assert f"serving on {url}" in capsys.readouterr().out


@pytest.mark.usefixtures("without_hypercorn_fixes")
async def test_serve_announces_the_shutdown_without_the_fixes() -> None:
    module = snippet("trio_shutdown")
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            config = ServerConfig(bind="127.0.0.1:0", graceful_timeout=30)
            [url] = await nursery.start(module.main, stop, config)
            async with open_websocket(url + "/presence/eve") as ws:
                stop.set()
                with pytest.raises(ClientSawClose) as closed:
                    await ws.get_message()
    assert close_of(closed) == (1001, "server shutting down")


@pytest.mark.parametrize(
    ("sent", "seen"),
    [(signal.SIGTERM, (1006, "")), (signal.SIGINT, (1001, ""))],
    ids=["SIGTERM", "SIGINT"],
)
async def test_hypercorn_with_workers_0(sent: signal.Signals, seen: tuple[int, str]) -> None:
    """trio/shutdown.md: without a supervisor there is no graceful shutdown trigger.

    (The default command lines, ``python -m trio_bocaws`` and ``hypercorn --worker-class
    trio`` with one or more workers, are tested in tests/test_cli.py: 1001 and the reason.)
    """
    command = ["hypercorn", "--worker-class", "trio", "--workers", "0", "-b", "127.0.0.1:0"]
    command += ["--graceful-timeout", "1"]
    async with server_process([*command, "examples.echo:app"]) as server:
        with trio.fail_after(15):
            async with open_websocket(server.url + "/echo") as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
                server.process.send_signal(sent)
                with pytest.raises(ClientSawClose) as closed:
                    await ws.get_message()
    assert close_of(closed) == seen


# -- Deployment ----------------------------------------------------------------------------


async def _raw_handshake(url: str, path: str) -> trio.SocketStream:
    """A client that completes the handshake, then never sends anything (a dead peer)."""
    host, port = url.removeprefix("ws://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += await stream.receive_some()
    assert response.startswith(b"HTTP/1.1 101")
    return stream


async def test_pings_and_read_timeout_drop_a_dead_peer() -> None:
    module = snippet("deployment_run")
    assert module.CONFIG.read_timeout > module.CONFIG.ping_interval
    config = attrs.evolve(module.CONFIG, bind="127.0.0.1:0", ping_interval=0.2, read_timeout=0.6)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            [url] = await nursery.start(
                lambda task_status: serve(
                    module.app, config, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            dead = await _raw_handshake(url, "/echo")
            async with dead, open_websocket(url + "/echo") as alive:
                start = trio.current_time()
                received = b""
                while chunk := await dead.receive_some():
                    received += chunk
                # It was pinged (opcode 0x9), got no answer, and was dropped.
                assert received[:1] == b"\x89"
                assert 0.5 < trio.current_time() - start < 2
                # A live client answers the pings (trio-websocket does) and stays.
                await trio.sleep(0.4)
                await alive.send_message("still here")
                assert await alive.get_message() == "still here"
            stop.set()


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
async def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout() -> None:
    """trio/timeouts.md: a send blocked on a client that does not read ends in 1006."""
    from trio_bocaws import App, WebSocket, WebSocketDisconnect

    app = App()
    seen: list[int] = []
    done = trio.Event()

    @app.websocket_route("/flood")
    async def flood(ws: WebSocket) -> None:
        try:
            while True:
                await ws.send_bytes(b"x" * 65536)
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
            raise
        finally:
            done.set()

    config = ServerConfig(bind="127.0.0.1:0", write_timeout=0.5, log_level="warning")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            [url] = await nursery.start(
                lambda task_status: serve(
                    app, config, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            async with await _raw_handshake(url, "/flood"):  # and never reads
                await done.wait()
            stop.set()
    assert seen == [1006]


NGINX_TEST_CONF = """\
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    include {tmp}/site.conf;
}}
"""


@asynccontextmanager
async def nginx(site: str) -> AsyncIterator[None]:
    require(
        shutil.which("nginx") is not None,
        "nginx",
        "install it with `apt-get install nginx-light` (or nginx)",
    )
    with tempfile.TemporaryDirectory() as tmp:
        await trio.Path(tmp, "site.conf").write_text(site)
        await trio.Path(tmp, "nginx.conf").write_text(NGINX_TEST_CONF.format(tmp=tmp))
        process = await trio.lowlevel.open_process(
            ["nginx", "-p", tmp, "-c", f"{tmp}/nginx.conf"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            process.terminate()
            with trio.move_on_after(5, shield=True):
                await process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_behind_nginx_with_a_root_path() -> None:
    proxy = snippet("deployment_proxy")
    site = (SNIPPETS / "nginx.conf").read_text(encoding="utf-8")
    with trio.fail_after(15):
        async with testing.serving(proxy.proxied_app, root_path="/chat") as server:
            port = _free_port()
            for old, new in [
                ("server 127.0.0.1:8000;", f"server {server.url.removeprefix('ws://')};"),
                ("listen 80;", f"listen 127.0.0.1:{port};"),
            ]:
                assert old in site
                site = site.replace(old, new)
            async with nginx(site):
                url = f"ws://127.0.0.1:{port}/chat/whoami"
                for _ in range(100):  # until nginx listens
                    try:
                        async with open_websocket(
                            url, extra_headers=[(b"x-forwarded-for", b"203.0.113.9")]
                        ) as ws:
                            message = await ws.get_message()
                        break
                    except OSError:
                        await trio.sleep(0.05)
                else:
                    raise AssertionError("nginx did not start")  # pragma: no cover
    # nginx appended the address it saw, and the app trusts that one hop. The scheme is
    # the one nginx was reached by, as X-Forwarded-Proto says it: "http", not "ws".
    assert message == "127.0.0.1 via http"


async def test_proxy_fix_reads_the_forwarded_headers() -> None:
    proxy = snippet("deployment_proxy")
    async with TestClient(proxy.proxied_app).websocket_connect(
        "/whoami",
        headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "wss"},
    ) as ws:
        assert await ws.receive_text() == "203.0.113.9 via wss"


async def test_behind_proxy_fix_shutdown_still_closes_at_once() -> None:
    """deployment.md: ProxyFixMiddleware deep-copies the scope; the shutdown notice survives."""
    from hypercorn.middleware import ProxyFixMiddleware

    from trio_bocaws import App, WebSocket

    app = App()

    @app.websocket_route("/wait")
    async def wait(ws: WebSocket) -> None:
        await ws.receive_text()

    proxied = ProxyFixMiddleware(app, mode="legacy", trusted_hops=1)
    with trio.fail_after(TIMEOUT):
        async with (
            testing.serving(proxied, graceful_timeout=30) as server,
            open_websocket(server.url + "/wait") as ws,
        ):
            await server.shutdown()  # long before the 30 s grace period (TIMEOUT)
            assert ws.closed is not None
            assert (ws.closed.code, ws.closed.reason) == (1001, "server shutting down")


def test_switching_the_hypercorn_fixes_off() -> None:
    code = "import trio_bocaws; print(trio_bocaws.hypercorn_fixes.installed())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"TRIO_BOCAWS_HYPERCORN_FIXES": "0", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"


# -- Security ------------------------------------------------------------------------------


def test_the_defaults_the_security_page_states() -> None:
    import hypercorn.config

    config = trio_bocaws.AppConfig()
    assert (config.allowed_origins, config.allow_missing_origin) == ((), True)
    assert config.max_connections == 10_000
    assert trio_bocaws.AppConfig(max_connections=None).max_connections is None  # no cap
    assert WebSocketConfig().idle_timeout is None
    assert WebSocketConfig().max_buffered_messages == 16
    server = ServerConfig()
    assert (server.max_message_size, server.write_timeout) == (2**20, 30.0)
    assert (server.ping_interval, server.read_timeout) == (None, None)
    # hypercorn's own, under `hypercorn --worker-class trio`.
    bare = hypercorn.config.Config()
    assert bare.websocket_max_message_size == 16 * 2**20
    assert (bare.websocket_ping_interval, bare.read_timeout) == (None, None)
    assert bare.max_app_queue_size == 10


async def _opens(
    client: TestClient, path: str, origin: str | None, host: str | None = None
) -> bool:
    """Whether a handshake with this Origin (and Host) is accepted; a refusal is a 403."""
    headers = {} if origin is None else {"origin": origin}
    if host is not None:
        headers["host"] = host
    rejection: HandshakeRejected | None = None
    try:
        async with client.websocket_connect(path, headers=headers) as ws:
            await ws.receive()
    except HandshakeRejected as refusal:
        rejection = refusal
    if rejection is None:
        return True
    assert rejection.status == 403
    expected = (
        "a handshake without an Origin header may not open this WebSocket"
        if origin is None
        else f"origin {origin!r} may not open this WebSocket"
    )
    assert rejection.body == expected.encode()
    return False


async def test_which_pages_may_open_the_socket() -> None:
    module = snippet("security_origins")
    client = TestClient(module.app)  # it connects to "testserver": a Host with no port
    for allowed in [
        "http://testserver",  # the server's own pages
        "https://testserver",  # ...also behind a proxy that terminates TLS
        "https://testserver:8443",  # the Host header names no port: ports are not compared
        "https://app.example.com",
        "https://eu.partner.example",
        "http://a.b.partner.example:8080",
        "http://localhost:5173",
        None,  # no Origin: not a browser
    ]:
        assert await _opens(client, "/account", allowed), allowed
    for refused_origin in [
        "https://evil.example",
        "https://testserver.evil.example",
        "http://app.example.com",  # the listed entry says https
        "https://app.example.com:8443",  # ...and so port 443
        "https://partner.example",  # the pattern is for subdomains only
        "https://partner.example.evil.example",
        "http://localhost:3000",
        "https://localhost:5173",
        "null",  # sandboxed frames, file: pages
    ]:
        assert not await _opens(client, "/account", refused_origin), refused_origin
    # When the Host header names a port, the page must be on that port.
    assert await _opens(client, "/account", "http://chat.example:8000", "chat.example:8000")
    assert not await _opens(client, "/account", "http://chat.example:9000", "chat.example:8000")
    assert not await _opens(client, "/account", "https://chat.example", "chat.example:8000")
    # "*" lets every page in, "null" included.
    star = trio_bocaws.App(config=trio_bocaws.AppConfig(allowed_origins=["*"]))
    star.add_websocket_route("/account", module.account)
    assert await _opens(TestClient(star), "/account", "null")


async def test_the_forms_of_an_allowed_origin() -> None:
    """security.md's table of allowed_origins entries, row by row."""
    from trio_bocaws import App, AppConfig

    rows: dict[str, tuple[list[str], list[str]]] = {
        "https://app.example.com": (
            ["https://app.example.com"],
            ["http://app.example.com", "https://app.example.com:8443"],
        ),
        "https://app.example.com:8443": (
            ["https://app.example.com:8443"],
            ["https://app.example.com", "http://app.example.com:8443"],
        ),
        "app.example.com": (
            ["https://app.example.com", "http://app.example.com:8080"],
            ["https://eu.app.example.com"],
        ),
        "*.example.com": (
            ["https://eu.example.com", "http://a.b.example.com:8080"],
            ["https://example.com", "https://example.com.evil.example"],
        ),
        "https://*.example.com:8443": (
            ["https://eu.example.com:8443"],
            ["https://eu.example.com", "http://eu.example.com:8443"],
        ),
        "*": (["https://anywhere.example", "null"], []),
    }
    for entry, (allowed, refused_origins) in rows.items():
        app = App(config=AppConfig(allowed_origins=[entry]))
        app.add_websocket_route("/account", snippet("security_origins").account)
        client = TestClient(app)
        for origin in allowed:
            assert await _opens(client, "/account", origin), (entry, origin)
        for origin in refused_origins:
            assert not await _opens(client, "/account", origin), (entry, origin)
    for entry, message in [
        ("ftp://files.example", "the scheme must be http or https"),
        ("https://app.example.com/chat", "invalid allowed origin"),
    ]:
        with pytest.raises(ValueError, match=message):
            AppConfig(allowed_origins=[entry])


async def test_pages_only_refuses_a_handshake_without_origin() -> None:
    client = TestClient(snippet("security_origins").browsers_only)
    assert not await _opens(client, "/account", None)
    assert await _opens(client, "/account", "http://testserver")


async def test_a_bare_websocket_makes_no_origin_check() -> None:
    from trio_bocaws import WebSocket

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async with WebSocket(scope, receive, send) as ws:
            await ws.send_text("anyone may read this")

    client = TestClient(app)
    async with client.websocket_connect("/", headers={"origin": "https://evil.example"}) as ws:
        assert await ws.receive_text() == "anyone may read this"


async def test_a_page_of_another_site_is_refused_on_a_real_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = snippet("security_origins")
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, logger="trio_bocaws"):
        async with testing.serving(module.app) as server:
            # What a browser sends when a page of another site opens the socket.
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket(
                    server.url + "/account", extra_headers=[(b"origin", b"https://evil.example")]
                ):
                    pass  # pragma: no cover
            own_page = "http://" + server.url.removeprefix("ws://")
            async with open_websocket(
                server.url + "/account", extra_headers=[(b"origin", own_page.encode())]
            ) as ws:
                assert await ws.get_message() == "balance: 42"
    assert (info.value.status_code, info.value.body) == (
        403,
        b"origin 'https://evil.example' may not open this WebSocket",
    )
    assert [record.getMessage() for record in caplog.records] == [
        "refused a WebSocket handshake to /account from origin 'https://evil.example': "
        "not the server's own, nor in allowed_origins"
    ]


async def test_a_session_cookie_decides_who_connects() -> None:
    client = TestClient(snippet("security_auth").app)
    ada = {"cookie": "theme=dark; session=q8Xz2vLw"}
    grace = {"cookie": "bad cookie=1; session=Hk3mP0sT"}
    async with client.websocket_connect("/inbox", headers=ada) as ws:
        assert await ws.receive_text() == "messages for ada"
    async with client.websocket_connect("/admin", headers=grace) as ws:
        assert await ws.receive_text() == "admin console for grace"
    async with client.websocket_connect("/status") as ws:
        assert await ws.receive_text() == "up (user: None)"
    for path, headers, body in [
        ("/inbox", {}, b"log in first"),
        ("/inbox", {"cookie": "session=guessed"}, b"log in first"),
        ("/admin", {}, b"log in first"),
        ("/admin", ada, b"admins only"),
    ]:
        rejection = await refused(client, path, headers=headers)
        assert (rejection.status, rejection.body) == (403, body), (path, headers)


async def test_a_hook_that_fails_is_a_500_and_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = snippet("security_auth")

    class Unreachable:
        def get(self, session: str) -> str:
            raise ConnectionError("session store unreachable")

    monkeypatch.setattr(module, "SESSIONS", Unreachable())
    with caplog.at_level(logging.ERROR, logger="trio_bocaws"):
        rejection = await refused(
            TestClient(module.app), "/inbox", headers={"cookie": "session=q8Xz2vLw"}
        )
    assert (rejection.status, rejection.body) == (500, b"")
    [record] = caplog.records
    assert record.getMessage() == "authenticate hook session_user failed for '/inbox'"
    assert record.exc_info is not None and record.exc_info[0] is ConnectionError


async def test_a_token_in_the_query_string_or_the_authorization_header() -> None:
    from examples import auth

    client = TestClient(auth.app)
    async with client.websocket_connect("/me?token=s3cr3t-ada") as ws:  # a browser's way
        assert await ws.receive_json() == {"user": "ada"}
    async with client.websocket_connect(
        "/me", headers={"Authorization": "Bearer s3cr3t-bob"}
    ) as ws:
        assert await ws.receive_json() == {"user": "bob"}
    missing = await refused(client, "/me")
    assert (missing.status, missing.body) == (401, b"a token is required")
    assert (b"www-authenticate", b"Bearer") in missing.headers
    wrong = await refused(client, "/me?token=guess")
    assert (wrong.status, wrong.body) == (403, b"unknown token")


async def test_wss_with_a_certificate_and_its_key(tmp_path: Path) -> None:
    import ssl

    import trio_websocket
    import trustme

    module = snippet("security_tls")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in certificate.cert_chain_pems))
    certificate.private_key_pem.write_to_path(str(keyfile))
    config = attrs.evolve(
        module.CONFIG, bind="127.0.0.1:0", certfile=str(certfile), keyfile=str(keyfile)
    )
    context = config.to_hypercorn().create_ssl_context()
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            [url] = await nursery.start(
                partial(serve, module.app, config, shutdown_trigger=stop.wait)
            )
            assert url.startswith("wss://127.0.0.1:")
            async with trio_websocket.open_websocket_url(
                url + "/hello", ssl_context=trusting
            ) as ws:
                assert await ws.get_message() == "hello over wss"
            # A client that does not trust the certificate's issuer refuses the server.
            await assert_certificate_refused(url)
            stop.set()


async def test_the_connection_cap(caplog: pytest.LogCaptureFixture) -> None:
    module = snippet("security_limits")
    cap = module.app.config.max_connections
    assert cap == 1_000
    client = TestClient(module.app)
    async with AsyncExitStack() as stack:
        for _ in range(cap):
            await stack.enter_async_context(client.websocket_connect("/feed"))
        assert module.app.connections == cap
        with caplog.at_level(logging.WARNING, logger="trio_bocaws"):
            rejection = await refused(client, "/chat")
        assert (rejection.status, rejection.body) == (
            503,
            b"the server is at capacity; try again later",
        )
        assert (b"retry-after", b"5") in rejection.headers
        assert [record.getMessage() for record in caplog.records] == [
            "refused a WebSocket handshake: max_connections=1000 are open"
        ]
    assert module.app.connections == 0
    async with client.websocket_connect("/chat") as ws:  # room again
        await ws.send_text("hi")
        assert await ws.receive_text() == "hi"


async def test_a_quiet_chat_client_is_closed_and_a_listener_is_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = TestClient(snippet("security_limits").app, timeout=3600)
    async with (
        client.websocket_connect("/chat") as chat,
        client.websocket_connect("/feed") as feed,
    ):
        assert await feed.receive_text() == "the feed starts here"
        await trio.sleep(200)
        await chat.send_text("still here")  # a message starts the 5 minutes again
        assert await chat.receive_text() == "still here"
        start = trio.current_time()
        assert await closed_with(chat) == (1001, "idle: no message for 300 seconds")
        assert trio.current_time() - start == pytest.approx(300)
        # The feed's client has said nothing all along, and is still connected.
        with pytest.raises(trio.TooSlowError):
            await feed.receive_text(timeout=3000)


async def test_a_message_over_the_limit_is_1009_for_the_client_and_the_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = snippet("security_limits")
    assert module.CONFIG.max_message_size == 64 * 1024
    # Without pings: hypercorn's ping task sleeps out its interval (20 s) after the close
    # before it ends, and the server's shutdown would wait for it (graceful_timeout).
    config = attrs.evolve(module.CONFIG, bind="127.0.0.1:0", ping_interval=None, read_timeout=None)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, logger="trio_bocaws"):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            [url] = await nursery.start(
                partial(serve, module.app, config, shutdown_trigger=stop.wait)
            )
            async with open_websocket(url + "/chat") as ws:
                await ws.send_message("x" * 65536)  # at the limit: accepted
                assert len(await ws.get_message()) == 65536
                await ws.send_message("x" * 65537)
                with pytest.raises(ClientSawClose) as closed:
                    await ws.get_message()
            stop.set()
    assert close_of(closed)[0] == 1009
    assert "client of chat left with close code 1009 (not in caught_close_codes)" in caplog.text


async def test_compressed_messages_count_at_their_decompressed_size() -> None:
    """security.md: hypercorn accepts permessage-deflate whenever a client offers it, and
    max_message_size applies to the message once decompressed. (trio-websocket cannot
    compress, so this client is wsproto on a TCP stream.)"""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Event, Request, TextMessage
    from wsproto.extensions import PerMessageDeflate

    module = snippet("security_limits")
    config = attrs.evolve(module.CONFIG, bind="127.0.0.1:0", ping_interval=None, read_timeout=None)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            [url] = await nursery.start(
                partial(serve, module.app, config, shutdown_trigger=stop.wait)
            )
            host, port = url.removeprefix("ws://").split(":")
            client = WSConnection(ConnectionType.CLIENT)
            pending: list[Event] = []
            async with await trio.open_tcp_stream(host, int(port)) as stream:

                async def next_event() -> Event:
                    while not pending:
                        client.receive_data(await stream.receive_some() or None)
                        pending.extend(client.events())
                    return pending.pop(0)

                request = Request(host=host, target="/chat", extensions=[PerMessageDeflate()])
                await stream.send_all(client.send(request))
                accepted = await next_event()
                assert isinstance(accepted, AcceptConnection)
                assert [type(e) for e in accepted.extensions] == [PerMessageDeflate]
                wire = client.send(TextMessage("x" * 65537))
                assert len(wire) < 1000  # far below the limit on the wire
                await stream.send_all(wire)
                closed = await next_event()
                assert isinstance(closed, CloseConnection) and closed.code == 1009
            stop.set()


@pytest.mark.parametrize("pings", [True, False], ids=["pings", "no pings"])
async def test_with_or_without_pings_a_shutdown_does_not_wait_for_closed_connections(
    pings: bool,
) -> None:
    """security.md: hypercorn's ping task for a closed connection would sleep out its
    interval, and the shutdown wait for it (until graceful_timeout); the fixes end it
    with the connection."""
    module = snippet("security_limits")
    config = attrs.evolve(
        module.CONFIG,
        bind="127.0.0.1:0",
        ping_interval=20 if pings else None,
        read_timeout=45 if pings else None,
        graceful_timeout=0.5,
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            [url] = await nursery.start(
                partial(serve, module.app, config, shutdown_trigger=stop.wait)
            )
            async with open_websocket(url + "/chat") as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
            await trio.sleep(0.1)  # the connection has closed, on both sides
            stop.set()
            start = trio.current_time()
        took = trio.current_time() - start
    assert took < 0.45, took  # well under graceful_timeout


def test_pings_come_with_a_longer_read_timeout() -> None:
    config = snippet("security_limits").CONFIG
    assert (config.ping_interval, config.read_timeout, config.write_timeout) == (20, 45, 30)
    with pytest.raises(ValueError, match="ping_interval needs read_timeout"):
        ServerConfig(ping_interval=20)
    with pytest.raises(ValueError, match="must be longer than ping_interval"):
        ServerConfig(ping_interval=20, read_timeout=20)


async def test_hypercorns_command_line_with_a_config_file() -> None:
    import hypercorn.config

    path = SNIPPETS / "hypercorn.toml"
    config = hypercorn.config.Config.from_toml(path)
    assert (config.worker_class, config.websocket_max_message_size) == ("trio", 65536)
    assert (config.websocket_ping_interval, config.read_timeout) == (20, 45)
    assert getattr(config, hypercorn_fixes.WRITE_TIMEOUT_OPTION) == 30
    command = ["hypercorn", "--config", str(path), "-b", "127.0.0.1:0", "examples.echo:app"]
    # hypercorn's ping task outlives a closed connection by up to its interval (20 s here),
    # and a shutdown waits for it; one second is enough for this test to end.
    command[1:1] = ["--graceful-timeout", "1"]
    async with server_process(command) as server:
        with trio.fail_after(15):
            async with open_websocket(server.url + "/echo") as ws:
                await ws.send_message("x" * 65536)
                assert len(await ws.get_message()) == 65536
                await ws.send_message("x" * 65537)
                with pytest.raises(ClientSawClose) as closed:
                    await ws.get_message()
    assert close_of(closed)[0] == 1009


async def test_hypercorns_command_line_with_the_logging_configuration() -> None:
    path = SNIPPETS / "deployment_logging.toml"
    command = ["hypercorn", "--worker-class", "trio", "--log-config", f"toml:{path}"]
    command += ["-b", "127.0.0.1:0", "examples.echo:app"]
    async with server_process(command) as server:
        with trio.fail_after(15):
            async with open_websocket(server.url + "/echo") as ws:
                port = ws.local.port
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
                await ws.aclose(4001)
            wanted = f"[DEBUG] 127.0.0.1:{port} /echo closed 4001 by client after "
            while wanted not in server.log():
                assert server.process.returncode is None, server.log()
                await trio.sleep(0.05)
        log = server.log()  # (the log goes with the block)
    [line] = [line for line in log.splitlines() if wanted in line]
    assert re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] ", line), line


# -- Typed messages ------------------------------------------------------------------------


async def test_typed_messages_guide() -> None:
    import msgpack

    module = snippet("typed_messages")
    client = TestClient(module.app, raise_app_exceptions=False)
    order = {"type": "order", "items": [{"name": "tea", "price": 2.5}]}
    async with client.websocket_connect("/orders") as ws:
        await ws.send_json(order)
        text = await ws.receive_text()
        assert text == '{"type":"receipt","order":1,"total":2.5,"status":"placed"}'
        await ws.send_json({"type": "cancel", "order": 1, "reason": "ignored key"})
        assert await ws.receive_json() == {
            "type": "receipt",
            "order": 1,
            "total": 0.0,
            "status": "cancelled",
        }
        await ws.send_json({"type": "order", "items": [{"name": "a", "price": "abc"}]})
        assert await closed_with(ws) == (
            1007,
            'invalid message: $.items[0].price: expected float, got "abc"',
        )
    # The problems the page lists, each as the patient view reports it.
    problems = {
        json.dumps(
            {
                "type": "order",
                "items": [{"name": "a", "price": 1}] * 2 + [{"name": "c", "price": "abc"}],
            }
        ): '$.items[2].price: expected float, got "abc"',
        json.dumps(
            {"type": "order", "items": [{"price": 1}]}
        ): "$.items[0].name: required field missing",
        json.dumps({"type": "refund"}): '$.type: expected one of "order", "cancel", got "refund"',
        json.dumps({"type": "order", "items": [], "priority": "urgent"}): (
            '$.priority: expected one of "low", "high", got "urgent"'
        ),
        json.dumps({"type": "order", "items": [], "due": "tomorrow"}): (
            '$.due: expected an ISO 8601 date and time or null, got "tomorrow"'
        ),
        "": "$: invalid JSON: Expecting value: line 1 column 1 (char 0)",
    }
    page = (DOCS / "typed-messages.md").read_text(encoding="utf-8")
    async with client.websocket_connect("/orders/patient") as ws:
        for sent, problem in problems.items():
            assert problem in page
            await ws.send_text(sent)
            assert await ws.receive_json() == {"errors": [problem]}
        await ws.send_json({"type": "cancel", "order": 3})
        assert await ws.receive_json() == {"ok": "Cancel"}
    async with client.websocket_connect("/orders/binary") as ws:
        await ws.send_bytes(msgpack.packb({**order, "due": "2024-05-06T07:08:09+00:00"}))
        assert msgpack.unpackb(await ws.receive_bytes()) == {
            "type": "receipt",
            "order": 1,
            "total": 1.0,
            "status": "placed",
        }
    async with TestClient(module.loose_app).websocket_connect("/orders") as ws:
        await ws.send_json({**order, "priority": "HIGH"})
        assert await ws.receive_text() == "high"


# -- Migrating -----------------------------------------------------------------------------


async def test_a_migrated_bocadillo_app(
    capsys: pytest.CaptureFixture[str], autojump_clock: trio.testing.MockClock
) -> None:
    module = snippet("migrating")
    async with TestClient(module.app) as client:
        async with client.websocket_connect("/echo?anonymous=true") as ws:
            await ws.send_json("hi")
            assert await ws.receive_json() == {"user": "anonymous", "message": "hi"}
        async with client.websocket_connect("/echo", headers={"user": "ada"}) as ws:
            await ws.send_json([1])
            assert await ws.receive_json() == {"user": "ada", "message": [1]}
        assert (await refused(client, "/hello")).status == 403
        async with client.websocket_connect("/hello", headers={"api-key": "s3kr3t"}) as ws:
            assert await ws.receive_text() == "hello"
        async with client.websocket_connect("/news") as ws:
            assert await ws.receive_text() == "still here"
            assert module.clients
        await trio.sleep(2)
        assert module.clients == set()
    assert "0 clients still connected" in capsys.readouterr().out


# -- Testing -------------------------------------------------------------------------------


@pytest.mark.usefixtures("chat_on_path")
def test_the_testing_pages_tests_pass(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest((SNIPPETS / "testing_conftest.py").read_text(encoding="utf-8"))
    for name in ("testing_client", "testing_plugin", "testing_server"):
        pytester.makepyfile(**{f"test_{name}": (SNIPPETS / f"{name}.py").read_text("utf-8")})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)


# -- Rooms: history, resume, presence ------------------------------------------------------


async def test_rooms_history_resume_and_presence() -> None:
    """rooms.md: a newcomer sees the latest messages, a client resumes after its last id
    (or is told to resync), and /who follows who is in the room."""
    module = snippet("rooms_history")
    said = [{"user": "ada", "said": f"m{n}"} for n in range(3)]
    with trio.fail_after(TIMEOUT):
        async with (
            TestClient(module.app) as client,
            client.websocket_connect("/who/lobby") as who,
        ):
            assert await who.receive_json() == {"here": {}}
            async with client.websocket_connect("/rooms/lobby?user=ada") as ada:
                assert await who.receive_json() == {"user": "ada", "connections": 1}
                ids = []
                for n in range(3):
                    await ada.send_json(f"m{n}")
                    message = await ada.receive_json()
                    assert message["message"] == said[n]
                    ids.append(message["id"])
            assert await who.receive_json() == {"user": "ada", "connections": 0}

            async with client.websocket_connect(f"/rooms/lobby?user=ada&since={ids[0]}") as ada:
                got = [await ada.receive_json() for _ in range(2)]
                assert got == [{"id": ids[n], "message": said[n]} for n in (1, 2)]
            async with client.websocket_connect("/rooms/lobby?user=bob") as bob:
                assert [(await bob.receive_json())["id"] for _ in range(3)] == ids
            async with client.websocket_connect("/rooms/lobby?user=eve&since=1-0") as eve:
                assert await eve.receive_json() == {"resync": True}
                assert [(await eve.receive_json())["message"] for _ in range(3)] == said


# -- deployment.md: metrics ------------------------------------------------------------------


async def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics over HTTP, as Prometheus scrapes: each sample of trio_bocaws's, by name
    and labels (without the otel_scope_* labels the exporter adds)."""
    from prometheus_client.parser import text_string_to_metric_families

    host, port = url.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            if sample.name.startswith("trio_bocaws_"):
                labels = {k: v for k, v in sample.labels.items() if not k.startswith("otel_")}
                samples[sample.name, frozenset(labels.items())] = sample.value
    return samples


async def test_deployment_metrics_scraped_by_prometheus() -> None:
    """deployment.md's Prometheus endpoint, served beside the WebSocket routes, scraped."""
    metered = snippet("deployment_metrics")
    echo = frozenset({("route", "/echo")})
    try:
        with trio.fail_after(TIMEOUT):
            async with testing.serving(metered.app) as server:
                async with open_websocket(server.url + "/echo") as ws:
                    for text in ["one", "two"]:
                        await ws.send_message(text)
                        assert await ws.get_message() == text
                    during = await _scrape(server.url)
                    await ws.aclose(1000)
                while metered.app.connections:  # noqa: ASYNC110 (ends in the same step)
                    await trio.sleep(0.01)
                after = await _scrape(server.url)
    finally:
        metered.provider.shutdown()  # takes the reader out of prometheus_client's registry
    assert during["trio_bocaws_connections_active", echo] == 1
    assert after["trio_bocaws_connections_active", echo] == 0
    closed = echo | {("close_code", "1000"), ("closed_by", "client")}
    assert after["trio_bocaws_connections_closed_total", closed] == 1
    assert after["trio_bocaws_messages_received_total", echo] == 2
    assert after["trio_bocaws_messages_sent_total", echo] == 2
    assert after["trio_bocaws_connection_duration_seconds_count", echo] == 1
