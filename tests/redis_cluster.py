"""A real three-node Redis Cluster for the tests (Debian's redis-server, 7.0 or later), on
free ports, no replicas: ``redis-cli --cluster create`` assigns the slots."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from .components import require

NODES = 3


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _node_port(taken: list[int]) -> int:
    """A free port whose cluster bus port (the port + 10000) is free too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port + 10000 < 65536 and port not in taken and _bindable(port + 10000):
            return port


def _version() -> tuple[int, ...]:
    output = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)", output)
    return tuple(int(part) for part in found.groups()) if found else (0,)


async def _answers(port: int, command: bytes, expected: bytes) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    async with stream:
        await stream.send_all(command)
        return expected in await stream.receive_some()


@asynccontextmanager
async def redis_cluster(directory: Path) -> AsyncIterator[str]:
    """Start the nodes, join them in a cluster; yield ``redis+cluster://`` for one node."""
    require(
        shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None,
        "redis-server and redis-cli",
        "install them: apt-get install redis-server (Debian's package, 7.0 tested)",
    )
    require(_version() >= (7,), "redis-server 7", "sharded pub/sub needs Redis 7")
    ports: list[int] = []
    for _ in range(NODES):
        ports.append(_node_port(ports))
    processes = []
    try:
        for port in ports:
            node = directory / f"node-{port}"
            node.mkdir()
            processes.append(
                await trio.lowlevel.open_process(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node / "nodes.conf"),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(node),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        with trio.fail_after(20):
            for port in ports:
                while not await _answers(port, b"PING\r\n", b"+PONG"):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            await trio.run_process(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in ports:
                while not await _answers(port, b"CLUSTER INFO\r\n", b"cluster_state:ok"):  # noqa: ASYNC110
                    await trio.sleep(0.05)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        with trio.move_on_after(10, shield=True):
            for process in processes:
                process.kill()
            for process in processes:
                await process.wait()
