"""A real redis-server for the tests, on a free port: a test may stop, freeze, restart it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio

from .components import require

# coredis 6.9's leftovers, collected later, for test modules that use Redis:
COREDIS_LEFTOVERS = [
    # memory streams of connections that failed (unclosed);
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function MemoryObject"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
    # and the cluster pool's connections, handed out by an async generator that its sharded
    # pub/sub leaves unfinished when cancelled (at the hub's close).
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <async_generator object ClusterConnectionPool.acquire"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: trio.Process | None = None

    async def start(self) -> None:
        """Start redis-server (again, on the same port) and wait until it answers."""
        self._process = await trio.lowlevel.open_process(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                async with stream:
                    await stream.send_all(b"PING\r\n")
                    if (await stream.receive_some()).startswith(b"+PONG"):
                        return

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Freeze the server for the block (SIGSTOP, SIGCONT after), as a hung host or a
        network partition looks to its clients: connections stay open, nothing answers."""
        assert self._process is not None, "the server is not running"
        os.kill(self._process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            self.thaw()

    def thaw(self) -> None:
        """Let a frozen server run again (SIGCONT); harmless on a running one."""
        if self._process is not None and self._process.returncode is None:
            os.kill(self._process.pid, signal.SIGCONT)

    async def stop(self) -> None:
        """Stop it as an outage would: the process goes away with its connections."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            with trio.fail_after(10):
                await process.wait()

    async def publish(self, channel: str, payload: bytes) -> None:
        """PUBLISH from a plain client of our own (another process, as far as the hub knows)."""
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with stream:
            parts = [b"PUBLISH", channel.encode(), payload]
            command = b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            await stream.send_all(command)
            assert (await stream.receive_some()).startswith(b":")


@asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisServer]:
    require(
        shutil.which("redis-server") is not None,
        "redis-server",
        "install it: apt-get install redis-server (Debian's package, 7.0 tested)",
    )
    server = RedisServer(directory)
    await server.start()
    try:
        yield server
    finally:
        with trio.move_on_after(10, shield=True):
            await server.stop()
