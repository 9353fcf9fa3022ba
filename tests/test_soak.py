"""Soak: many connections over time leave the server as they found it (no leak)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import trio

from .conftest import connect
from .subprocesses import server_process

CYCLES = 10_000
CONCURRENT = 1_000
PARALLEL = 16  # clients cycling at once, to keep the test short
WARM_UP_CYCLES = 5_000


def _server_pid(parent: int) -> int:
    return parent  # python -m trio_bocaws serves in its own process with one worker


def _resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _cycles(url: str, count: int) -> None:
    async def worker(share: int) -> None:
        for number in range(share):
            async with connect(url) as client:
                await client.send_message(f"cycle {number}")
                assert await client.get_message() == f"cycle {number}"

    async with trio.open_nursery() as nursery:
        for index in range(PARALLEL):
            nursery.start_soon(worker, count // PARALLEL + (index < count % PARALLEL))


async def _collect(server_url: str) -> int:
    """A full collection in the server, with a moment before and after it for the closes
    (this connection's too) to finish; returns how many objects the server tracks."""
    await trio.sleep(0.5)
    async with connect(server_url + "/collect") as client:
        objects = int(await client.get_message())
    await trio.sleep(0.5)
    return objects


async def _concurrent(url: str, count: int) -> None:
    opened = 0
    all_open = trio.Event()

    async def hold() -> None:
        nonlocal opened
        async with connect(url) as client:
            opened += 1
            if opened == count:
                all_open.set()
            await all_open.wait()  # every connection is open at once
            await client.send_message("together")
            assert await client.get_message() == "together"

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(hold)


async def test_connect_echo_close_cycles_and_concurrent_connections_leak_nothing() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * CONCURRENT + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    # The runner as users run it (its collector setting included), on the echo example.
    command = ["trio_bocaws", "tests.apps.soak:app", "--bind", "127.0.0.1:0"]
    async with server_process(command) as server:
        url = server.url + "/echo"
        pid = _server_pid(server.process.pid)
        with trio.fail_after(300):
            # Warm up, peak included: CPython keeps the memory of 1,000 connections in its
            # pools once it has held them, so the baseline is taken after a first peak.
            # And the runner defers full collections (gc_full_threshold): garbage from
            # closed connections waits for one, up to a level that thousands of cycles
            # reach (benchmarks/gc_churn.py), and the pools keep that high-water mark.
            await _cycles(url, WARM_UP_CYCLES)
            await _concurrent(url, CONCURRENT)
            objects_before = await _collect(server.url)
            memory_before, fds_before = _resident_kib(pid), _open_fds(pid)

            await _cycles(url, CYCLES)
            await _concurrent(url, CONCURRENT)

            objects_after = await _collect(server.url)
            memory_after, fds_after = _resident_kib(pid), _open_fds(pid)
        assert await server.stop() == 0
    assert fds_after == fds_before, (fds_before, fds_after)
    # 11,000 connections later: a leak of one object per connection would add 11,000.
    assert objects_after - objects_before < 500, (objects_before, objects_after)
    # After the same peak again and a full collection, the resident size should be back
    # near where it was (the allocator keeps some high-water marks: it varies by a few MiB
    # from run to run, up or down); a leak of 1 KiB per
    # connection would add 11 MiB.
    growth = memory_after - memory_before
    assert growth < 8 * 1024, f"resident memory grew by {growth} KiB"
