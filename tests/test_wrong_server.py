"""An App on a server that is not Trio's refuses to start, and says which command to run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from subprocess import DEVNULL

import pytest
import trio
from trio_websocket import ConnectionRejected

from trio_bocaws.testing import open_websocket

from .subprocesses import ROOT

TIMEOUT = 20
INSTEAD = (
    "run `hypercorn --worker-class trio examples.echo:app` or "
    "`python -m trio_bocaws examples.echo:app` instead"
)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_hypercorns_asyncio_worker_refuses_to_start_with_the_command_to_run() -> None:
    result = _run(["hypercorn", "-b", "127.0.0.1:0", "examples.echo:app"])
    last = result.stderr.strip().splitlines()[-1]
    assert "trio_bocaws runs on Trio, and this server runs asyncio" in last, result.stderr
    assert INSTEAD in last
    assert "RunContext" not in result.stderr  # not Trio's own failure, told in Trio's words
    assert "Running on" not in result.stderr + result.stdout


def test_uvicorn_refuses_to_start_with_the_command_to_run() -> None:
    pytest.importorskip("uvicorn")
    result = _run(["uvicorn", "--port", "0", "examples.echo:app"])
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if "runs on Trio" in line]
    assert INSTEAD in line
    assert "RunContext" not in result.stderr
    assert "Application startup failed" in result.stderr


async def test_a_handshake_without_lifespan_on_uvicorn_gets_the_message() -> None:
    """uvicorn --lifespan off: no startup to refuse, so each handshake says it (HTTP 500)."""
    pytest.importorskip("uvicorn")
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "server.log"
        with log.open("wb") as sink:
            command = ["uvicorn", "--port", "0", "--lifespan", "off", "examples.echo:app"]
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", *command],
                stdin=DEVNULL,
                stdout=sink,
                stderr=sink,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        try:
            with trio.fail_after(TIMEOUT):
                while not (found := re.search(r"running on http://([\d.]+:\d+)", log.read_text())):
                    assert process.returncode is None, log.read_text()
                    await trio.sleep(0.05)
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket(f"ws://{found.group(1)}/echo"):
                        pass  # pragma: no cover
            assert rejected.value.status_code == 500
            body = (rejected.value.body or b"").decode()
            assert body.startswith("trio_bocaws runs on Trio")
            assert INSTEAD in body
        finally:
            process.terminate()
            with trio.move_on_after(10, shield=True):
                await process.wait()
