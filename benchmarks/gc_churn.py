"""What the collector setting costs in memory on a server that keeps taking connections.

    python benchmarks/gc_churn.py                          # runner, CPython's default, 1000
    python benchmarks/gc_churn.py --rounds 12 --variant runner

Starts the trio_bocaws benchmark server once per variant (``runner``: the collector as
trio_bocaws's runner sets it for users; otherwise a ``BENCH_GC`` value of server.py), and
runs rounds of 5,000 connect-echo-close cycles (16 at a time) followed by 1,000
connections open at once, each echoing once. After each round it prints how far the
server's resident memory is above where it was after a first, smaller round. Garbage
cycles that live long enough to reach the oldest generation are freed only by a full
collection; the rarer those are, the higher this settles, or, if they stop coming, the
more it keeps growing. The client is trio-websocket, in this process.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Server, pin_self, rss_bytes

VARIANTS = ("runner", "default", "threshold=700/10/1000")
PARALLEL = 16


async def cycles(url: str, count: int) -> None:
    async def loop(share: int) -> None:
        for number in range(share):
            async with open_websocket_url(url) as client:
                await client.send_message(str(number))
                await client.get_message()

    async with trio.open_nursery() as nursery:
        for index in range(PARALLEL):
            nursery.start_soon(loop, count // PARALLEL + (index < count % PARALLEL))


async def at_once(url: str, count: int) -> None:
    opened = 0
    all_open = trio.Event()

    async def hold() -> None:
        nonlocal opened
        async with open_websocket_url(url) as client:
            opened += 1
            if opened == count:
                all_open.set()
            await all_open.wait()
            await client.send_message("together")
            await client.get_message()

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(hold)


async def measure(server: Server, rounds: int, churned: int, held: int) -> list[float]:
    url = server.url("/echo")
    await cycles(url, churned // 10)
    await at_once(url, held)
    await trio.sleep(0.5)
    base = rss_bytes(server.pid)
    growth = []
    for number in range(rounds):
        await cycles(url, churned)
        await at_once(url, held)
        await trio.sleep(0.5)
        growth.append((rss_bytes(server.pid) - base) / 2**20)
        print(f"  round {number + 1}: {growth[-1]:+.1f} MiB", flush=True)
    return growth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="runner or a BENCH_GC")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cycles", type=int, default=5000, help="per round")
    parser.add_argument("--at-once", type=int, default=1000, help="per round")
    arguments = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pin_self()
    table = []
    for variant in arguments.variant or VARIANTS:
        print(f"{variant}:", flush=True)
        env = {} if variant == "runner" else {"BENCH_GC": variant}
        server = Server("trio_bocaws", env=env)
        try:
            growth = trio.run(
                measure, server, arguments.rounds, arguments.cycles, arguments.at_once
            )
        finally:
            server.stop()
        table.append((variant, growth))
    per_round = f"{arguments.cycles} cycles + {arguments.at_once} at once"
    print(f"\nresident memory above the start, MiB, after each round of {per_round}:")
    for variant, growth in table:
        print(f"{variant:>24}  " + "  ".join(f"{g:+6.1f}" for g in growth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
