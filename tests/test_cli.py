"""The command lines, run as real processes: ``python -m trio_bocaws`` and hypercorn's."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from trio_bocaws._cli import _parser, main
from trio_bocaws._gc import DEFAULT_FULL_THRESHOLD

from .conftest import close_of, connect
from .subprocesses import ROOT, ServerProcess, server_process

TIMEOUT = 15


async def _echo_once(url: str) -> None:
    async with connect(url + "/echo") as client:
        await client.send_message("ping")
        assert await client.get_message() == "ping"


async def _shutdown_is_seen_by_clients(server: ServerProcess, urls: list[str]) -> None:
    """SIGTERM the server while clients wait; each must see 1001 and a reason."""
    closes: list[tuple[int, str]] = []
    connected = 0
    all_connected = trio.Event()

    async def wait_for_close(url: str) -> None:
        nonlocal connected
        async with connect(url) as client:
            connected += 1
            if connected == len(urls):
                all_connected.set()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await client.get_message()
            closes.append(close_of(closed))

    async with trio.open_nursery() as nursery:
        for url in urls:
            nursery.start_soon(wait_for_close, url)
        await all_connected.wait()
        assert await server.stop() == 0
    assert closes == [(1001, "server shutting down")] * len(urls)


@pytest.mark.parametrize(
    "command",
    [
        ["trio_bocaws", "examples.echo:app", "--bind", "127.0.0.1:0"],
        ["hypercorn", "--worker-class", "trio", "-b", "127.0.0.1:0", "examples.echo:app"],
    ],
    ids=["trio_bocaws", "hypercorn"],
)
async def test_echo_example_under_each_command_line(command: list[str]) -> None:
    async with server_process(command) as server:
        with trio.fail_after(TIMEOUT):
            await _echo_once(server.url)
            await _shutdown_is_seen_by_clients(server, [server.url + "/echo"])


@pytest.mark.parametrize(
    "command",
    [
        ["trio_bocaws", "tests.apps.workers:app", "--bind", "127.0.0.1:0", "--workers", "2"],
        [
            "hypercorn",
            "--worker-class",
            "trio",
            "--workers",
            "2",
            "-b",
            "127.0.0.1:0",
            "tests.apps.workers:app",
        ],
    ],
    ids=["trio_bocaws", "hypercorn"],
)
async def test_two_worker_processes(command: list[str]) -> None:
    async with server_process(command, expect_urls=2) as server:
        with trio.fail_after(TIMEOUT):
            pids: set[str] = set()
            async with trio.open_nursery() as nursery:
                # Connections spread over the workers as the kernel hands out accepts;
                # keep each open so that the next one may land elsewhere.
                done = trio.Event()

                async def hold() -> None:
                    async with connect(server.url + "/pid") as client:
                        pids.add(str(await client.get_message()))
                        if len(pids) == 2:
                            done.set()
                        await done.wait()

                for _ in range(40):
                    nursery.start_soon(hold)
                    await trio.sleep(0.01)
                    if done.is_set():
                        break
                with trio.move_on_after(5):
                    await done.wait()
                done.set()
            assert len(pids) == 2, f"all connections went to worker(s) {pids}"
            # Our runner sets each worker's collector; plain hypercorn leaves CPython's.
            async with connect(server.url + "/gc") as client:
                thresholds = json.loads(await client.get_message())
            assert thresholds[2] == (DEFAULT_FULL_THRESHOLD if command[0] == "trio_bocaws" else 10)
            await _shutdown_is_seen_by_clients(server, [server.url + "/pid" for _ in range(6)])


# -- Bad input: one line, non-zero exit --------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nosuchmodule:app"], "cannot import 'nosuchmodule': no module named 'nosuchmodule'"),
        (["examples.echo:nope"], "module 'examples.echo' has no attribute 'nope'"),
        (["not a path"], "app must be given as module:attribute"),
        (["examples.echo:app", "--bind", "nonsense"], "invalid bind address 'nonsense'"),
        (["examples.echo:app", "--ping-interval", "5"], "ping_interval needs read_timeout"),
        (["examples.echo:app", "--workers", "0"], "workers must be an int of at least 1"),
        (["examples.echo:app", "--certfile", "/no/cert.pem", "--keyfile", "k"], "no such file"),
        (["examples.echo:app", "--log-level", "loud"], "argument --log-level: invalid choice"),
        (
            ["examples.echo:app", "--gc-full-threshold", "lots"],
            "argument --gc-full-threshold: not a whole number or 'none': 'lots'",
        ),
        (["examples.echo:app", "--gc-full-threshold", "0"], "gc_full_threshold must be an int"),
        ([], "the following arguments are required: app"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    arguments: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert error.startswith("trio-bocaws: error: ")
    assert message in error


def test_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "trio_bocaws",
                "examples.echo:app",
                "--bind",
                f"127.0.0.1:{port}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line == f"trio-bocaws: error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_failing_startup_is_one_line_and_exit_1() -> None:
    command = ["-m", "trio_bocaws", "tests.apps.broken_startup:app", "--bind", "127.0.0.1:0"]
    result = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("trio-bocaws: error: the app failed to start: ")
    assert "connect_to_database failed: ConnectionRefusedError('database is down')" in last
    assert "Traceback (most recent call last)" in result.stderr  # the callback's, logged once
    assert result.stderr.count("Traceback (most recent call last)") == 1


@pytest.mark.parametrize(
    "command",
    [
        ["trio_bocaws", "examples.chat.app:app", "--bind", "127.0.0.1:0"],
        ["hypercorn", "--worker-class", "trio", "-b", "127.0.0.1:0", "examples.chat.app:app"],
    ],
    ids=["trio_bocaws", "hypercorn"],
)
async def test_chat_example_under_each_command_line(command: list[str]) -> None:
    async with server_process(command) as server:
        with trio.fail_after(TIMEOUT):
            async with connect(server.url + "/chat/lobby?user=ada") as ada:
                assert json.loads(await ada.get_message()) == {"here": {}}
                assert json.loads(await ada.get_message()) == {"user": "ada", "joined": True}
                await ada.send_message('{"text": "hello"}')
                said = json.loads(await ada.get_message())
                assert said["message"] == {"user": "ada", "text": "hello"}
            await _shutdown_is_seen_by_clients(server, [server.url + "/chat/den"])


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "trio-bocaws"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert "module:attribute" in result.stdout


def test_every_option_is_in_the_deployment_table() -> None:
    """docs/deployment.md lists each option of the command line, and no other."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    documented = set()
    for line in text.splitlines():
        if line.startswith("| `-") and "|" in line[1:]:
            first_cell = line.split("|")[1]
            documented.update(re.findall(r"--[a-z0-9-]+", first_cell))
    options = {
        option
        for action in _parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert documented == options
