"""The mistakes people make, each met with a message that names the problem and the fix,
as early as it can be said: at registration, at startup, or in the log of the failure."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trio_bocaws import App, WebSocket
from trio_bocaws.testing import ConnectionClosed, TestClient

from .conftest import echo_app
from .subprocesses import ROOT

TIMEOUT = 15


def test_a_misspelt_value_type_names_value_type_and_the_choices() -> None:
    app = App()
    with pytest.raises(ValueError, match=r"^value_type must be one of") as info:

        @app.websocket_route("/echo", value_type="jsn")
        async def echo(ws: WebSocket) -> None: ...

    message = str(info.value)
    assert "'text', 'bytes', 'json', 'event'" in message
    assert message.endswith("not 'jsn' (did you mean 'json'?)")
    assert "receive_type" not in message


def test_the_route_decorator_without_parentheses_raises_at_decoration() -> None:
    app = App()
    with pytest.raises(TypeError) as info:

        @app.websocket_route  # type: ignore[arg-type]
        async def echo(ws: WebSocket) -> None: ...

    assert str(info.value) == (
        '@app.websocket_route needs the route\'s path: write @app.websocket_route("/echo") '
        "above `async def echo`, with parentheses"
    )
    assert app.routes == ()


async def test_sending_bytes_on_a_text_route_names_send_and_the_send_type() -> None:
    app = App()
    errors: list[str] = []

    @app.websocket_route("/text")
    async def text(ws: WebSocket) -> None:
        try:
            await ws.send(b"x")
        except TypeError as exc:
            errors.append(str(exc))
        await ws.send("sent")

    @app.websocket_route("/bytes", send_type="bytes")
    async def binary(ws: WebSocket) -> None:
        try:
            await ws.send("x")
        except TypeError as exc:
            errors.append(str(exc))
        await ws.send(b"sent")

    async with TestClient(app) as client:
        for path in ("/text", "/bytes"):
            async with client.websocket_connect(path) as ws:
                assert await ws.receive() in ("sent", b"sent")
    assert errors == [
        "send() takes a str on this route (send_type='text'), not bytes: "
        "use ws.send_bytes() for a binary message, or send_type='bytes'",
        "send() takes bytes on this route (send_type='bytes'), not str: "
        "use ws.send_text() for a text message, or send_type='text'",
    ]


def test_app_route_points_to_app_http_app() -> None:
    app = App()
    with pytest.raises(AttributeError) as info:
        app.route("/")  # type: ignore[attr-defined]
    assert "'App' object has no attribute 'route'" in str(info.value)
    assert "App(http_app)" in str(info.value)
    with pytest.raises(AttributeError, match=r"^'App' object has no attribute 'nothing'$"):
        app.nothing  # type: ignore[attr-defined]  # noqa: B018


def _cli(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_bocaws", *arguments, "--bind", "127.0.0.1:0"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "examples.echo:echo",
            "'examples.echo:echo' is not an ASGI app (it cannot take scope, receive and "
            "send); a WebSocket view? serve the App it is registered on: examples.echo:app",
        ),
        (
            "examples/echo.py:app",
            "app must be given as module:attribute, not 'examples/echo.py:app' "
            "(did you mean examples.echo:app? the app is given as module:attribute)",
        ),
        (
            "examples.chat:app",
            "module 'examples.chat' has no attribute 'app' "
            "(did you mean examples.chat.app:app? 'examples.chat' is a package)",
        ),
        (
            "examples.echo:application",
            "module 'examples.echo' has no attribute 'application' "
            "(did you mean examples.echo:app?)",
        ),
    ],
)
def test_a_wrong_app_path_refuses_to_start_with_a_hint(path: str, message: str) -> None:
    result = _cli(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"trio-bocaws: error: {message}"]


def test_a_file_name_as_module_gets_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "echo.py").write_text((ROOT / "examples" / "echo.py").read_text())
    result = _cli("echo.py:app", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.endswith("(did you mean echo:app? the app is given as module:attribute)")


def test_a_syntax_error_in_the_app_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("from trio_bocaws import App\napp = App(\n")
    result = _cli("broken:app", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "trio-bocaws: error: broken.py, line 2: SyntaxError: '(' was never closed"
    ]


def test_an_app_that_fails_to_import_shows_the_traceback_from_its_own_code(
    tmp_path: Path,
) -> None:
    (tmp_path / "failing.py").write_text(
        "import os\n\nSECRET = os.environ['TRIO_BOCAWS_TEST_UNSET']\n"
    )
    result = _cli("failing:app", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[:2] == [
        "trio-bocaws: error: cannot import 'failing:app':",
        "Traceback (most recent call last):",
    ]
    # The first frame is the user's module: none of the runner's or importlib's.
    assert 'failing.py", line 3, in <module>' in lines[2]
    assert lines[-1] == "KeyError: 'TRIO_BOCAWS_TEST_UNSET'"
    assert "importlib" not in result.stderr
    assert "runpy" not in result.stderr
    assert "_loading.py" not in result.stderr


async def test_asyncio_in_a_view_logs_a_hint_about_trio(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.websocket_route("/nap")
    async def nap(ws: WebSocket) -> None:
        await ws.accept()
        await asyncio.sleep(0.1)

    async with TestClient(app) as client, client.websocket_connect("/nap") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.receive()
    assert closed.value.code == 1011
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == (
        "WebSocket view test_asyncio_in_a_view_logs_a_hint_about_trio.<locals>.nap for "
        "'/nap' raised; hint: this is asyncio's error: trio_bocaws views run on Trio; use "
        "trio.sleep() and Trio's APIs (or an anyio-based library), not asyncio's"
    )
    assert record.exc_info is not None
    assert "no running event loop" in str(record.exc_info[1])


async def test_test_client_with_a_plain_with_says_async_with() -> None:
    with pytest.raises(TypeError) as info, TestClient(echo_app()):
        pass  # pragma: no cover
    assert str(info.value) == (
        "TestClient runs the app's lifespan in the test's Trio run: use "
        "`async with TestClient(app) as client:`, not `with`"
    )


async def test_an_awaited_websocket_connect_says_async_with() -> None:
    client = TestClient(echo_app())
    with pytest.raises(TypeError) as info:
        await client.websocket_connect("/echo")  # type: ignore[misc]
    assert str(info.value) == (
        "websocket_connect() opens a connection for a block: use "
        "`async with client.websocket_connect(path) as ws:`"
    )
    # Used as documented, it still works.
    with trio.fail_after(TIMEOUT):
        async with client.websocket_connect("/echo") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"


async def test_app_nursery_outside_the_lifespan_mentions_the_test_client() -> None:
    app = echo_app()
    with pytest.raises(Exception, match=r"async with TestClient\(app\)") as info:
        _ = app.nursery
    assert type(info.value).__name__ == "WebSocketStateError"
