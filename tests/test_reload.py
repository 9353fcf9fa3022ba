"""``python -m trio_bocaws module:app --reload``, as real processes: an app file in a
temporary directory is edited under a running server, and a trio-websocket client sees
each restart (1001, then the new code on the same port)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import DEVNULL

import pytest
import trio
from trio_websocket import ConnectionClosed

from trio_bocaws._cli import main

from .conftest import close_of, connect

TIMEOUT = 30  # a restart is a new interpreter that imports trio_bocaws and the app
_RUNNING_ON = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")

APP = """\
import trio

from trio_bocaws import App

app = App()


@app.websocket_route("/answer")
async def answer(ws):
    await ws.send({answer!r})
    try:
        async for _ in ws:
            pass
    finally:
        if {stubborn!r}:
            with trio.CancelScope(shield=True):
                await trio.sleep(30)
"""


def write_app(directory: Path, answer: str, *, stubborn: bool = False) -> None:
    # Each version differs in size as well as content: an editor's save looks like that,
    # and the test does not depend on how finely the file system dates it.
    (directory / "app.py").write_text(APP.format(answer=answer, stubborn=stubborn))


class Supervisor:
    """``python -m trio_bocaws app:app --reload`` in ``directory``, in a process group of
    its own (as a terminal's foreground job is), its log in a file."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log_path = log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ctrl_c(self) -> None:
        """What a terminal's Ctrl+C does: SIGINT to every process of the group, the
        supervisor and its child alike."""
        os.killpg(self.process.pid, signal.SIGINT)

    async def wait_for(self, text: str, count: int = 1) -> list[str]:
        """The log's lines that contain ``text``, once there are ``count`` of them."""
        while True:
            lines = [line for line in self.log().splitlines() if text in line]
            if len(lines) >= count:
                return lines
            assert self.process.returncode is None, self.log()
            await trio.sleep(0.05)

    async def url(self, count: int = 1) -> str:
        """The URL of the route once the ``count``-th server has started."""
        line = (await self.wait_for("Running on", count))[-1]
        found = _RUNNING_ON.search(line)
        assert found is not None, line
        return f"ws://127.0.0.1:{found.group(1)}/answer"


@asynccontextmanager
async def supervisor(
    directory: Path, *options: str, env: dict[str, str] | None = None
) -> AsyncIterator[Supervisor]:
    log = directory / "server.log"
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_bocaws", "app:app", "--reload", *options],
            stdin=DEVNULL,
            stdout=sink,
            stderr=sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=directory,
            start_new_session=True,
        )
    try:
        yield Supervisor(process, log)
    finally:
        with trio.move_on_after(20, shield=True):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def answer_of(url: str) -> str:
    async with connect(url) as client:
        return str(await client.get_message())


async def test_an_edit_restarts_the_server_and_a_syntax_error_waits_for_the_fix(
    tmp_path: Path,
) -> None:
    write_app(tmp_path, "first")
    async with supervisor(tmp_path, "--bind", "127.0.0.1:0") as server:
        with trio.fail_after(TIMEOUT):
            url = await server.url()
            [watching] = await server.wait_for("Reloading when")
            assert watching.endswith(f"[INFO] Reloading when a .py file changes in {tmp_path}")
            async with connect(url) as client:
                assert await client.get_message() == "first"
                write_app(tmp_path, "second version")
                with pytest.raises(ConnectionClosed) as closed:
                    await client.get_message()
            assert close_of(closed) == (1001, "server shutting down")
            [reloading] = await server.wait_for("Reloading: ")
            assert reloading.endswith("[INFO] Reloading: app.py changed")
            # Same port: the supervisor holds the socket; this waits in its backlog for
            # the new child.
            assert await answer_of(url) == "second version"
            assert await server.url(2) == url

            (tmp_path / "app.py").write_text("def broken(:\n")
            [error] = await server.wait_for("SyntaxError")
            assert error.startswith("trio-bocaws: error: app.py, line 1: SyntaxError: ")
            await server.wait_for("waiting for a change to restart it")
            assert server.process.returncode is None

            write_app(tmp_path, "third, fixed")
            assert await server.url(3) == url
            assert await answer_of(url) == "third, fixed"

            # One Ctrl+C: the open connection gets 1001, the supervisor exits 0.
            async with connect(url) as client:
                assert await client.get_message() == "third, fixed"
                server.ctrl_c()
                with pytest.raises(ConnectionClosed) as closed:
                    await client.get_message()
            assert close_of(closed) == (1001, "server shutting down")
            assert await server.process.wait() == 0
        log = server.log()
    assert "Traceback" not in log, log
    assert "KeyboardInterrupt" not in log, log
    assert "Shutting down: closing 1 WebSocket connection with 1001" in log, log
    assert "Second signal" not in log, log


async def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    write_app(tmp_path, "hello", stubborn=True)
    async with supervisor(tmp_path, "--bind", "127.0.0.1:0") as server:
        with trio.fail_after(TIMEOUT):
            async with connect(await server.url()) as client:
                assert await client.get_message() == "hello"
                server.ctrl_c()
                await server.wait_for("Shutting down: closing 1 WebSocket connection")
                # The view now sleeps, shielded, for 30 s: the second Ctrl+C does not wait.
                server.ctrl_c()
                assert await server.process.wait() == 1
        log = server.log()
    assert "Traceback" not in log, log
    assert log.splitlines()[-1].endswith(
        "[WARNING] Second signal: stopping now, without waiting for open connections"
    )


async def test_the_server_stops_gracefully_if_the_supervisor_is_killed(tmp_path: Path) -> None:
    """No orphan left serving the port: the child sees the end of its pipe."""
    write_app(tmp_path, "hello")
    async with supervisor(tmp_path, "--bind", "127.0.0.1:0") as server:
        with trio.fail_after(TIMEOUT):
            url = await server.url()
            async with connect(url) as client:
                assert await client.get_message() == "hello"
                server.process.kill()  # the supervisor alone, as SIGKILL leaves it
                with pytest.raises(ConnectionClosed) as closed:
                    await client.get_message()
            assert close_of(closed) == (1001, "server shutting down")
            port = int(url.split(":")[2].split("/")[0])
            while True:  # the child exits once its last connection has closed
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    break
                await stream.aclose()
                await trio.sleep(0.05)


async def test_reload_dir_watches_another_directory(tmp_path: Path) -> None:
    """The app imports a module from elsewhere (on PYTHONPATH); editing it restarts."""
    library = tmp_path / "library"
    library.mkdir()
    (library / "answers.py").write_text("ANSWER = 'from the library'\n")
    served = tmp_path / "served"
    served.mkdir()
    (served / "app.py").write_text(
        "from answers import ANSWER\n"
        "from trio_bocaws import App\n"
        "app = App()\n"
        "@app.websocket_route('/answer')\n"
        "async def answer(ws):\n"
        "    await ws.send(ANSWER)\n"
    )
    async with supervisor(
        served,
        "--bind",
        "127.0.0.1:0",
        "--reload-dir",
        str(library),
        "--reload-dir",
        ".",
        env={"PYTHONPATH": str(library)},
    ) as server:
        with trio.fail_after(TIMEOUT):
            url = await server.url()
            assert await answer_of(url) == "from the library"
            (library / "answers.py").write_text("ANSWER = 'edited in the library'\n")
            [reloading] = await server.wait_for("Reloading: ")
            assert reloading.endswith(f"Reloading: {library / 'answers.py'} changed")
            await server.url(2)
            assert await answer_of(url) == "edited in the library"


def test_reload_without_watchfiles_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import watchfiles fails
    assert main(["examples.echo:app", "--reload"]) == 2
    assert capsys.readouterr().err == (
        "trio-bocaws: error: --reload needs the watchfiles package: "
        'pip install "trio-bocaws[reload]"\n'
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--reload", "--workers", "2"],
            "--reload runs one worker process, restarted on each change; "
            "leave out --workers (or --reload)",
        ),
        (["--reload-dir", "."], "--reload-dir goes with --reload"),
        (["--reload", "--reload-dir", "no/such/dir"], "--reload-dir: no such directory: "),
    ],
)
def test_reload_options_that_cannot_work_are_one_line_and_exit_2(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["examples.echo:app", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trio-bocaws: error: {message}")
    assert err.count("\n") == 1
