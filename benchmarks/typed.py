"""Typed messages against receive_json/send_json: the cost per message, side by side.

    python benchmarks/typed.py              # instructions (valgrind), Python calls, timings
    python benchmarks/typed.py --no-callgrind

Each run echoes one small message many times through a WebSocket over in-memory ASGI
``receive``/``send`` callables (no server, no sockets), so that the numbers are the library's
own work per message: receive it, decode it, encode the answer, send it.

- ``json``:  ``receive_json()`` returns a dict, ``send_json(dict)`` sends it back.
- ``typed``: ``receive()`` on a route typed ``Join | Say | Leave`` returns a validated ``Say``,
  ``send(say)`` sends it back (tag dispatch, cattrs structuring and unstructuring included).

Three measures, each ``(cost(M) - cost(N)) / (M - N)`` so that setup cancels out:
instructions under ``valgrind --tool=callgrind`` (deterministic, the figure to compare),
Python function calls (cProfile), and wall-clock time (the best of five runs; it varies
with the machine's load). The ratio typed/json is printed for each. Prints numbers only;
it asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trio_bocaws import WebSocket


@attrs.frozen
class Join:
    type: Literal["join"]
    user: str


@attrs.frozen
class Say:
    type: Literal["say"]
    user: str
    text: str
    room: int


@attrs.frozen
class Leave:
    type: Literal["leave"]


MESSAGE: dict[str, Any] = {"type": "say", "user": "ann", "text": "hello, world", "room": 7}
TEXT = json.dumps(MESSAGE, separators=(",", ":"))
SCOPE: dict[str, Any] = {"type": "websocket", "path": "/", "headers": [], "query_string": b""}


async def echo(kind: str, count: int) -> None:
    """Echo ``count`` messages through a WebSocket over in-memory ASGI callables."""
    connect = {"type": "websocket.connect"}
    message = {"type": "websocket.receive", "text": TEXT}
    events = iter([connect])

    async def receive() -> dict[str, Any]:
        return next(events, message)

    async def send(event: Any) -> None:
        pass

    if kind == "typed":
        ws = WebSocket(SCOPE, receive, send, value_type=Join | Say | Leave)
        await ws.accept()
        for _ in range(count):
            say = await ws.receive()
            await ws.send(say)
    else:
        ws = WebSocket(SCOPE, receive, send)
        await ws.accept()
        for _ in range(count):
            data = await ws.receive_json()
            await ws.send_json(data)


def seconds(kind: str, count: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        trio.run(echo, kind, count)
        best = min(best, time.perf_counter() - start)
    return best


def calls(kind: str, count: int) -> int:
    profile = cProfile.Profile()
    profile.enable()
    trio.run(echo, kind, count)
    profile.disable()
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


def instructions(kind: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--worker",
                kind,
                str(count),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        text = Path(out).read_text(errors="replace")
    found = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(
        r"^totals:\s+(\d+)", text, re.M
    )
    if found is None:
        raise RuntimeError("no instruction total in callgrind's output")
    return int(found.group(1))


def per_message(measure: Any, kind: str, low: int, high: int) -> float:
    return float(measure(kind, high) - measure(kind, low)) / (high - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction count")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "COUNT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        kind, count = arguments.worker
        trio.run(echo, kind, int(count))
        return

    rows: list[tuple[str, float, float, str]] = []
    if not arguments.no_callgrind and shutil.which("valgrind"):
        json_i = per_message(instructions, "json", 200, 2200)
        typed_i = per_message(instructions, "typed", 200, 2200)
        rows.append(("instructions (callgrind)", json_i, typed_i, "{:,.0f}"))
    json_c = per_message(calls, "json", 1000, 11000)
    typed_c = per_message(calls, "typed", 1000, 11000)
    rows.append(("Python calls (cProfile)", json_c, typed_c, "{:.1f}"))
    json_s = per_message(seconds, "json", 2000, 22000) * 1e6
    typed_s = per_message(seconds, "typed", 2000, 22000) * 1e6
    rows.append(("microseconds (best of 5)", json_s, typed_s, "{:.2f}"))

    print(f"One message echoed: {TEXT}")
    print(f"Python {sys.version.split()[0]}; in-memory ASGI, no server\n")
    print(f"{'per message':<26} {'json':>12} {'typed':>12} {'typed/json':>11}")
    for name, json_value, typed_value, form in rows:
        ratio = typed_value / json_value
        json_text, typed_text = form.format(json_value), form.format(typed_value)
        print(f"{name:<26} {json_text:>12} {typed_text:>12} {ratio:>10.2f}x")


if __name__ == "__main__":
    main()
