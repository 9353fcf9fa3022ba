"""Start a server as a child process and find the address it bound."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import DEVNULL

import trio

ROOT = Path(__file__).resolve().parent.parent
_RUNNING_ON = re.compile(r"Running on (https?)://([\w.\-]+|\[[\da-fA-F:]+\]):(\d+)")


class ServerProcess:
    """A server running as a child process; its log goes to a file, never a full pipe."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log_path = log
        self.urls: list[str] = []

    @property
    def url(self) -> str:
        return self.urls[0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> int:
        """SIGTERM, then wait (at most 10 s); return the exit code."""
        if self.process.returncode is None:
            self.process.terminate()
        with trio.fail_after(10):
            return await self.process.wait()


@asynccontextmanager
async def server_process(
    args: Sequence[str], *, env: dict[str, str] | None = None, expect_urls: int = 1
) -> AsyncIterator[ServerProcess]:
    """Run ``python -m <args>``; yield once it logs the addresses it listens on."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(ROOT), environment.get("PYTHONPATH", "")) if part
    )
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "server.log"
        with log.open("wb") as sink:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", *args],
                stdin=DEVNULL,
                stdout=sink,
                stderr=sink,
                env=environment,
                cwd=ROOT,
            )
        server = ServerProcess(process, log)
        try:
            with trio.fail_after(20):
                while len(server.urls) < expect_urls:
                    if process.returncode is not None:
                        raise RuntimeError(f"server exited early:\n{server.log()}")
                    server.urls = [
                        f"{'wss' if scheme == 'https' else 'ws'}://{host}:{port}"
                        for scheme, host, port in _RUNNING_ON.findall(server.log())
                    ]
                    await trio.sleep(0.05)
            yield server
        finally:
            with trio.move_on_after(20, shield=True):
                if process.returncode is None:
                    process.terminate()
                    with trio.move_on_after(10) as scope:
                        await process.wait()
                    if scope.cancelled_caught:
                        process.kill()
                        await process.wait()
