"""What the runner shows in the terminal, as real processes: the startup lines, one log
format, Ctrl+C, a second Ctrl+C, --version, and run()'s bind error."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

import trio

import trio_bocaws

from .conftest import connect
from .subprocesses import ROOT, ServerProcess, server_process

TIMEOUT = 15
# hypercorn's format, which ours follows: "[2026-01-05 10:00:00 +0000] [4242] [INFO] ..."
LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")
SHIELDED = ["trio_bocaws", "tests.apps.shielded:app"]


async def wait_for_line(server: ServerProcess, text: str) -> str:
    while True:
        for line in server.log().splitlines():
            if text in line:
                return line
        assert server.process.returncode is None, server.log()
        await trio.sleep(0.05)


async def test_one_line_per_address_with_the_websocket_urls_in_hypercorns_format() -> None:
    command = [*SHIELDED, "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0"]
    async with server_process(command, expect_urls=2) as server:
        lines = [line for line in server.log().splitlines() if "Running on" in line]
        assert len(lines) == 2
        for line, url in zip(lines, server.urls, strict=True):
            assert LOG_LINE.match(line), line
            http = url.replace("ws://", "http://")
            assert line.endswith(
                f"[INFO] Running on {http} (CTRL + C to quit); "
                f"WebSocket routes: {url}/stubborn, {url}/rooms/{{room}}"
            )
        assert await server.stop() == 0


async def test_ctrl_c_says_what_closes_and_a_second_one_ends_a_shielded_view_at_once() -> None:
    async with server_process([*SHIELDED, "--bind", "127.0.0.1:0"]) as server:
        with trio.fail_after(TIMEOUT):
            async with connect(server.url + "/stubborn") as client:
                assert await client.get_message() == "hello"
                server.process.send_signal(signal.SIGINT)
                first = await wait_for_line(server, "Shutting down")
                assert first.endswith(
                    "[INFO] Shutting down: closing 1 WebSocket connection with 1001 "
                    "(Ctrl+C again to stop at once)"
                )
                # The view now sleeps, shielded, for 30 s: a second Ctrl+C does not wait.
                server.process.send_signal(signal.SIGINT)
                assert await server.process.wait() == 1
        log = server.log()  # the log goes with the block
    assert "Traceback" not in log
    assert "KeyboardInterrupt" not in log
    [last] = [line for line in log.splitlines() if "Second signal" in line]
    assert last.endswith(
        "[WARNING] Second signal: stopping now, without waiting for open connections"
    )
    assert all(LOG_LINE.match(line) for line in log.splitlines()), log


async def test_the_graceful_timeout_ends_a_shielded_view_too() -> None:
    command = [*SHIELDED, "--bind", "127.0.0.1:0", "--graceful-timeout", "0.5"]
    async with server_process(command) as server:
        with trio.fail_after(TIMEOUT):
            async with connect(server.url + "/stubborn") as client:
                assert await client.get_message() == "hello"
                server.process.send_signal(signal.SIGINT)
                assert await server.process.wait() == 1
        log = server.log()
    assert "Traceback" not in log
    assert log.splitlines()[-1].endswith(
        "[WARNING] Still running 0.5s after the shutdown began (graceful_timeout): stopping now"
    )


async def test_ctrl_c_without_connections_stops_cleanly() -> None:
    async with server_process([*SHIELDED, "--bind", "127.0.0.1:0"]) as server:
        server.process.send_signal(signal.SIGINT)
        with trio.fail_after(TIMEOUT):
            assert await server.process.wait() == 0
        log = server.log()
    assert "closing 0 WebSocket connections with 1001" in log
    assert "Traceback" not in log


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_bocaws", "--version"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert result.stdout.startswith(f"trio-bocaws {trio_bocaws.__version__} (hypercorn ")


def test_run_on_a_busy_port_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        program = (
            "from trio_bocaws import ServerConfig, run\n"
            "from examples.echo import app\n"
            f"run(app, ServerConfig(bind='127.0.0.1:{port}'))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", program],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"trio_bocaws: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
