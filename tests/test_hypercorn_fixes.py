"""The fixes to hypercorn's WebSocket stream: what they change, and switching them off."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed

from trio_bocaws import WebSocket, WebSocketDisconnect, _hypercorn, hypercorn_fixes
from trio_bocaws.hypercorn_fixes import HypercornCompatibilityWarning

from .conftest import Server, close_code, connect, recording_handler, websocket_app
from .raw_client import masked_frame, raw_connection
from .subprocesses import server_process

Serve = Callable[..., Awaitable[Server]]


async def _close_code_seen_by_app(serve: Serve, code: int, reason: str) -> tuple[int, str]:
    reasons: list[str] = []
    seen, done, handler = recording_handler(reasons)
    server = await serve(websocket_app(handler))
    with trio.fail_after(5):
        async with connect(server.url) as client:
            await client.aclose(code, reason)
        await done.wait()
    return seen[0], reasons[0]


def test_installed_on_the_pinned_version() -> None:
    assert hypercorn_fixes.installed()


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "tab closed"), (4001, "bye")])
async def test_the_app_sees_the_clients_close_code(serve: Serve, code: int, reason: str) -> None:
    assert await _close_code_seen_by_app(serve, code, reason) == (code, reason)


@pytest.mark.usefixtures("without_hypercorn_fixes")
async def test_without_the_fixes_hypercorn_reports_1006(serve: Serve) -> None:
    """What upstream issue pgjones/hypercorn#127 describes, so the fix is what makes the
    difference in the test above."""
    assert await _close_code_seen_by_app(serve, 4001, "bye") == (1006, "")


async def test_a_close_frame_without_a_code_is_reported_as_1005(serve: Serve) -> None:
    seen, done, handler = recording_handler()
    server = await serve(websocket_app(handler))
    with trio.fail_after(5):
        stream = await raw_connection(server.url, "/")
        async with stream:
            await stream.send_all(masked_frame(0x8, b""))  # a close frame without a code
            await done.wait()
    assert seen == [1005]


async def test_an_oversized_message_is_reported_as_1009(serve: Serve) -> None:
    seen, done, handler = recording_handler()
    server = await serve(websocket_app(handler), websocket_max_message_size=1000)
    with trio.fail_after(5):
        async with connect(server.url) as client:
            await client.send_message("x" * 2000)
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        await done.wait()
    assert close_code(closed) == 1009
    assert seen == [1009]


def test_the_environment_variable_switches_them_off() -> None:
    code = "import trio_bocaws; print(trio_bocaws.hypercorn_fixes.installed())"
    for value, expected in [("0", "False"), ("off", "False"), ("1", "True")]:
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={"TRIO_BOCAWS_HYPERCORN_FIXES": value, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == expected


@pytest.fixture
def reinstalled() -> Iterator[None]:
    """The fixes off for the test, which installs them its own way; back after."""
    hypercorn_fixes.uninstall()
    try:
        yield
    finally:
        hypercorn_fixes.uninstall()
        assert hypercorn_fixes.install()


@pytest.mark.usefixtures("reinstalled")
def test_a_fix_whose_target_changed_is_left_out_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hypercorn.protocol.ws_stream import WebsocketBuffer, WSStream

    own_extend, own_app_send = WebsocketBuffer.extend, WSStream.app_send
    changed = [
        attrs.evolve(patch, written_for={"99.0": "0" * 16})
        if patch.name == "message size in bytes"
        else patch
        for patch in _hypercorn.PATCHES
    ]
    monkeypatch.setattr(_hypercorn, "hypercorn_version", lambda: "99.0")
    with pytest.warns(HypercornCompatibilityWarning) as warned:
        assert _hypercorn.install(changed) is False
    [warning] = warned
    message = str(warning.message)
    assert "hypercorn 99.0 is not a version trio_bocaws verified" in message
    assert "message size in bytes" in message and "WebsocketBuffer.extend" in message
    assert "stream status" not in message
    assert WebsocketBuffer.extend is own_extend  # left alone
    assert WSStream.app_send is not own_app_send  # the others apply
    assert hypercorn_fixes.installed()
    # Once: installing again (after an uninstall) says nothing more.
    _hypercorn.uninstall()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _hypercorn.install(changed) is False


@pytest.mark.usefixtures("reinstalled")
def test_a_release_that_kept_the_code_keeps_every_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_hypercorn, "hypercorn_version", lambda: "99.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hypercorn_fixes.install() is True


@pytest.mark.usefixtures("reinstalled")
def test_installing_twice_wraps_nothing_twice() -> None:
    from hypercorn.protocol.ws_stream import WSStream

    own = WSStream.app_send
    assert hypercorn_fixes.install() and hypercorn_fixes.install()
    assert _hypercorn.original("hypercorn.protocol.ws_stream", "app_send", "WSStream") is own
    assert len(_hypercorn._applied) == len(_hypercorn.PATCHES)
    hypercorn_fixes.uninstall()
    assert WSStream.app_send is own


def test_every_fix_says_what_why_and_how_it_is_checked() -> None:
    names = [patch.name for patch in _hypercorn.PATCHES]
    assert len(set(names)) == len(names)
    for patch in _hypercorn.PATCHES:
        assert patch.why and patch.checked_by, patch.name
        assert set(patch.written_for) == hypercorn_fixes.VERIFIED_VERSIONS, patch.name


async def test_close_codes_under_the_hypercorn_command_line() -> None:
    """``hypercorn --worker-class trio module:app`` imports the app, and with it the fixes."""
    args = ["hypercorn", "--worker-class", "trio", "-b", "127.0.0.1:0", "tests.apps.recorder:app"]
    async with server_process(args) as server:
        with trio.fail_after(10):
            async with connect(server.url + "/echo") as client:
                await client.send_message("hi")
                assert await client.get_message() == "hi"
                await client.aclose(4001, "from the CLI")
            async with connect(server.url + "/last") as observer:
                assert await observer.get_message() == "4001 from the CLI"
        assert await server.stop() == 0


async def _race_close_and_send(close: Any, rounds: int = 200) -> dict[str, int]:
    """Close a stream in one task while another starts sending on it; count outcomes."""
    from hypercorn.trio.tcp_server import TCPServer

    outcomes = {"sent": 0, "closed": 0, "busy": 0}
    for _ in range(rounds):
        ours, theirs = trio.socket.socketpair()
        stream = trio.SocketStream(ours)
        server = TCPServer.__new__(TCPServer)
        server.stream = stream  # type: ignore[assignment]

        async def send(stream: trio.SocketStream = stream) -> None:
            try:
                await stream.send_all(b"x")
                outcomes["sent"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outcomes["closed"] += 1  # what hypercorn's protocol_send handles
            except trio.BusyResourceError:
                outcomes["busy"] += 1  # what escapes it and stops the worker

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close, server)
            nursery.start_soon(send)
        theirs.close()
    return outcomes


async def test_closing_while_a_send_starts_never_makes_the_send_busy() -> None:
    from hypercorn.trio.tcp_server import TCPServer

    outcomes = await _race_close_and_send(TCPServer._close)
    assert outcomes["busy"] == 0, outcomes
    assert outcomes["closed"] > 0  # the race did happen


async def test_hypercorns_own_close_makes_the_racing_send_busy() -> None:
    """The upstream behaviour the fix exists for (if this fails, upstream fixed it)."""
    from trio_bocaws._hypercorn import original

    outcomes = await _race_close_and_send(
        original("hypercorn.trio.tcp_server", "_close", "TCPServer")
    )
    assert outcomes["busy"] > 0, outcomes


def test_a_deep_copy_of_the_scope_keeps_the_shutdown_signal() -> None:
    """hypercorn's ProxyFixMiddleware deep-copies the scope, state included."""
    import copy

    from trio_bocaws._shutdown import STATE_KEY, ServerShutdown, server_shutdown_of

    shutdown = ServerShutdown()
    scope = {"type": "websocket", "state": {STATE_KEY: shutdown}}
    assert server_shutdown_of(copy.deepcopy(scope)) is shutdown
    assert copy.copy(shutdown) is shutdown


async def test_an_oversized_message_followed_by_a_close_ends_the_connection(
    serve: Serve,
) -> None:
    """Found by Autobahn (case 9.1.4 against a 1 MiB limit): the close that arrives in the
    same read as the end of an oversized message was dropped, and nothing ended."""
    seen, done, handler = recording_handler()
    server = await serve(websocket_app(handler), websocket_max_message_size=2**20)
    with trio.fail_after(5):
        stream = await raw_connection(server.url, "/")
        async with stream:
            # A 4 MiB message, then a close, in one write.
            close = masked_frame(0x8, (1000).to_bytes(2, "big"))
            await stream.send_all(masked_frame(0x1, b"x" * 4 * 2**20) + close)
            received = bytearray()
            while chunk := await stream.receive_some():
                received += chunk  # until the server closes the TCP connection
            await done.wait()
    assert received.startswith(b"\x88\x02\x03\xf1")  # the server's close frame: 1009
    assert seen == [1009]


# -- The contract with the WebSocket core (trio_bocaws._stream_status) -------------------


def _bare_app(
    view: Callable[[dict[str, Any], Any, Any], Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    """A bare ASGI app (no trio_bocaws WebSocket) running ``view`` for each WebSocket."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await view(scope, receive, send)

    return app


async def test_the_stream_status_has_the_clients_close_before_the_app_reads_it(
    serve: Serve,
) -> None:
    from trio_bocaws._stream_status import StreamClosedError, stream_status_of

    client_closed, done = trio.Event(), trio.Event()
    seen: dict[str, Any] = {}

    async def view(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = stream_status_of(scope)
        seen["at start"] = None if status is None else status.close
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await client_closed.wait()
        assert status is not None
        seen["status"] = status.close  # before any receive() of the disconnect
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            seen["send"] = exc
        seen["disconnect"] = await receive()
        done.set()

    server = await serve(_bare_app(view))
    with trio.fail_after(5):
        async with connect(server.url) as client:
            # trio-websocket's aclose returns once the server has echoed the close.
            await client.aclose(4001, "bye now")
        client_closed.set()
        await done.wait()
    assert seen["at start"] is None
    assert seen["status"] == (4001, "bye now")
    assert isinstance(seen["send"], StreamClosedError)
    assert seen["disconnect"] == {
        "type": "websocket.disconnect",
        "code": 4001,
        "reason": "bye now",
    }


async def test_a_send_only_loop_raises_once_the_client_drops(serve: Serve) -> None:
    """hypercorn drops sends to a dropped client; the loop never learns, and spins."""
    from trio_bocaws._stream_status import stream_status_of

    outcome: dict[str, Any] = {}
    done = trio.Event()

    async def view(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        sends = 0
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"tick"})
                sends += 1
        except OSError as exc:
            outcome["error"] = exc
            status = stream_status_of(scope)
            outcome["status"] = None if status is None else status.close
        finally:
            done.set()

    server = await serve(_bare_app(view))
    with trio.fail_after(5):
        stream = await raw_connection(server.url, "/")
        await stream.receive_some()  # at least one tick
        await stream.aclose()  # no close frame: the TCP connection just goes
        await done.wait()
    assert isinstance(outcome.get("error"), OSError)
    assert outcome["status"] == (1006, "")


async def test_a_send_after_the_apps_own_close_raises(serve: Serve) -> None:
    from trio_bocaws._stream_status import stream_status_of

    outcome: dict[str, Any] = {}
    done = trio.Event()

    async def view(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000})
        assert (await receive())["code"] == 1000  # the client's answer
        try:
            await send({"type": "websocket.send", "text": "after"})
        except OSError as exc:
            outcome["error"] = exc
        status = stream_status_of(scope)
        outcome["status"] = None if status is None else status.close
        done.set()

    server = await serve(_bare_app(view))
    with trio.fail_after(5):
        async with connect(server.url) as client:
            with pytest.raises(ConnectionClosed):
                await client.get_message()
        await done.wait()
    assert isinstance(outcome.get("error"), OSError)
    assert outcome["status"] is None  # the app closed first


async def test_a_text_over_the_limit_in_bytes_gets_1009(serve: Serve) -> None:
    """The limit is in bytes: 600 two-byte characters are 1200 bytes, over a 1000 limit."""
    seen: list[int] = []
    done = trio.Event()

    async def echo_then_record(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())  # the one under the limit
        await handler_after_accept(ws)

    async def handler_after_accept(ws: WebSocket) -> None:
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            seen.append(exc.code)
        done.set()

    server = await serve(websocket_app(echo_then_record), websocket_max_message_size=1000)
    with trio.fail_after(5):
        async with connect(server.url) as client:
            await client.send_message("é" * 400)  # 800 bytes
            assert await client.get_message() == "é" * 400
            await client.send_message("é" * 600)  # 600 characters, 1200 bytes
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        await done.wait()
    assert close_code(closed) == 1009
    assert seen == [1009]


def test_every_fix_names_tests_that_exist() -> None:
    from pathlib import Path

    root = Path(__file__).parent.parent
    for patch in _hypercorn.PATCHES:
        for check in patch.checked_by:
            path, _, name = check.partition("::")
            source = (root / path).read_text(encoding="utf-8")
            assert not name or f"def {name}(" in source, (patch.name, check)


def test_the_nox_session_runs_every_verified_version() -> None:
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parent.parent / "noxfile.py").read_text(encoding="utf-8"))
    [versions] = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(target, "id", "") == "HYPERCORN_VERSIONS" for target in node.targets)
    ]
    assert set(versions) == hypercorn_fixes.VERIFIED_VERSIONS
