"""The per-message path, counted: user-space instructions per echoed message.

    python benchmarks/profile_path.py                       # callgrind, bare vs trio_bocaws
    python benchmarks/profile_path.py --servers bare,bare+fixes,trio_bocaws,starlette
    python benchmarks/profile_path.py --calls               # also Python calls per message
    python benchmarks/profile_path.py --per connection      # a whole connection instead

Each server runs under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``, pinned to
core 0, and echoes N and then (in a second run) M messages of 16 bytes of text on one
connection, sent one at a time (ping-pong) by a small blocking client in this process,
pinned to core 1. Startup and shutdown cost the same in both runs, so
``(instructions(M) - instructions(N)) / (M - N)`` is the cost of one message: receiving a
text frame, the app's receive and send, and sending the echo, inside hypercorn and trio.
The count is deterministic (it does not depend on the machine's load), which makes it the
figure to compare small changes with.

``--calls`` adds the same subtraction for Python function calls (cProfile, no valgrind):
which functions run how many times per message, server by server. ``--per connection``
counts a whole short connection instead (handshake, one echo, close; 200 against 1000
connections), the cost behind the churn scenario.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import pstats
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import HERE, BenchmarkError, Server, pin_self, publish, versions

DEFAULT_SERVERS = ("bare", "bare+fixes", "trio_bocaws")


# -- A minimal blocking WebSocket client ----------------------------------------------------


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, masked with a fixed key: the server's work is the same)."""
    mask = b"\x37\xfa\x21\x3d"
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def receive_exactly(sock: socket.socket, count: int, buffer: bytearray) -> None:
    view = memoryview(buffer)
    got = 0
    while got < count:
        n = sock.recv_into(view[got:count])
        if not n:
            raise BenchmarkError("the server closed the connection")
        got += n


def echo_messages(port: int, count: int, size: int) -> None:
    """Connect to /echo, echo ``count`` text messages one at a time, close."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=600)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(b"trio_bocaws-benc").decode()
    sock.sendall(
        (
            f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise BenchmarkError("the server closed the connection during the handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise BenchmarkError(f"handshake refused: {response[:200]!r}")
    if size >= 126:
        raise ValueError("this client reads echoes of up to 125 bytes")
    frame = masked_frame(0x1, b"x" * size)
    expected = 2 + size  # the server's frames are not masked
    buffer = bytearray(expected)
    for _ in range(count):
        sock.sendall(frame)
        receive_exactly(sock, expected, buffer)
    sock.sendall(masked_frame(0x8, struct.pack("!H", 1000)))
    # Read the server's close frame, then wait for it to close the TCP connection.
    while sock.recv(4096):
        pass
    sock.close()


# -- One run ---------------------------------------------------------------------------------


def workload(per: str, port: int, count: int, size: int) -> None:
    """``count`` messages on one connection, or ``count`` connections of one message."""
    if per == "message":
        echo_messages(port, count, size)
    else:
        for _ in range(count):
            echo_messages(port, 1, size)


def callgrind_run(kind: str, per: str, count: int, size: int, workdir: Path) -> int:
    """Instructions executed by the server process that served ``count`` units."""
    out = workdir / f"callgrind.{kind}.{per}.{count}.out"
    server = Server(
        kind,
        env={"PYTHONHASHSEED": "0"},
        wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q"],
        startup_timeout=900,
    )
    try:
        workload(per, server.port, count, size)
        server.stop(timeout=900)
    finally:
        server.kill()
    for line in out.read_text(errors="replace").splitlines():
        found = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if found:
            return int(found.group(1))
    raise BenchmarkError(f"no instruction total in {out}")


def cprofile_run(kind: str, per: str, count: int, size: int, workdir: Path) -> pstats.Stats:
    out = workdir / f"cprofile.{kind}.{per}.{count}.prof"
    server = Server(kind, env={"PYTHONHASHSEED": "0", "BENCH_CPROFILE": str(out)})
    try:
        workload(per, server.port, count, size)
        server.stop()
    finally:
        server.kill()
    return pstats.Stats(str(out))


def calls_per_message(
    small: pstats.Stats, large: pstats.Stats, messages: int
) -> list[tuple[str, float, float]]:
    """(function, calls per message, own seconds per message) from two profiles."""
    small_stats: dict[Any, Any] = small.stats  # type: ignore[attr-defined]
    large_stats: dict[Any, Any] = large.stats  # type: ignore[attr-defined]
    rows = []
    for func, (_, calls, tottime, _, _) in large_stats.items():
        _, small_calls, small_tottime, _, _ = small_stats.get(func, (0, 0, 0.0, 0, None))
        per = (calls - small_calls) / messages
        if per >= 0.5:
            filename, line, name = func
            where = _short_path(filename)
            label = f"{where}:{line}({name})" if line else name
            rows.append((label, per, (tottime - small_tottime) / messages))
    rows.sort(key=lambda row: (-row[1], row[0]))
    return rows


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(HERE.parent) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- Main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--servers",
        type=lambda s: [k.strip() for k in s.split(",") if k.strip()],
        default=list(DEFAULT_SERVERS),
        help=f"comma-separated (default {','.join(DEFAULT_SERVERS)})",
    )
    parser.add_argument(
        "--per",
        choices=("message", "connection"),
        default="message",
        help="count the cost of a message (on one connection), or of a whole connection "
        "(open, one echo, close)",
    )
    parser.add_argument("-n", type=int, help="units in the short run (default 1000 / 200)")
    parser.add_argument("-m", type=int, help="units in the long run (default 5000 / 1000)")
    parser.add_argument("--size", type=int, default=16, help="bytes of text per message")
    parser.add_argument("--calls", action="store_true", help="also Python calls per message")
    parser.add_argument("--no-callgrind", action="store_true", help="only --calls")
    parser.add_argument("--top", type=int, default=40, help="functions listed with --calls")
    parser.add_argument("--keep", type=Path, help="keep callgrind/cProfile files here")
    parser.add_argument("--json", type=Path, help="where to write the results")
    arguments = parser.parse_args(argv)
    per_message = arguments.per == "message"
    arguments.n = arguments.n or (1000 if per_message else 200)
    arguments.m = arguments.m or (5000 if per_message else 1000)
    if arguments.m <= arguments.n:
        parser.error("-m must be larger than -n")
    if not arguments.no_callgrind and shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind), or use --no-callgrind")
    pin_self()
    messages = arguments.m - arguments.n
    workdir = arguments.keep or Path(tempfile.mkdtemp(prefix="bench-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "benchmarks/profile_path.py", *sys.argv[1:]]),
            "versions": versions(),
            "n": arguments.n,
            "m": arguments.m,
            "size": arguments.size,
            "per": arguments.per,
        },
        "instructions_per_unit": {},
        "calls_per_unit": {},
    }
    started = time.monotonic()
    if not arguments.no_callgrind:
        for kind in arguments.servers:
            counts = {}
            for count in (arguments.n, arguments.m):
                print(
                    f"[{time.monotonic() - started:5.0f}s] callgrind {kind} {count} "
                    f"{arguments.per}s",
                    file=sys.stderr,
                )
                counts[count] = callgrind_run(kind, arguments.per, count, arguments.size, workdir)
            per = (counts[arguments.m] - counts[arguments.n]) / messages
            results["instructions_per_unit"][kind] = {
                "per_message": per,
                "total_n": counts[arguments.n],
                "total_m": counts[arguments.m],
            }
    profiles: dict[str, list[tuple[str, float, float]]] = {}
    if arguments.calls:
        for kind in arguments.servers:
            print(f"[{time.monotonic() - started:5.0f}s] cProfile {kind}", file=sys.stderr)
            small = cprofile_run(kind, arguments.per, arguments.n, arguments.size, workdir)
            large = cprofile_run(kind, arguments.per, arguments.m, arguments.size, workdir)
            profiles[kind] = calls_per_message(small, large, messages)
            results["calls_per_unit"][kind] = {
                "total": sum(row[1] for row in profiles[kind]),
                "functions": [
                    {"function": f, "calls": round(c, 3), "own_us": round(t * 1e6, 3)}
                    for f, c, t in profiles[kind]
                ],
            }
    text = report(results, profiles, arguments.top)
    if not arguments.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    publish(results, text, arguments.json, "profile")
    return 0


def report(
    results: dict[str, Any], profiles: dict[str, list[tuple[str, float, float]]], top: int
) -> str:
    meta = results["meta"]
    unit = meta["per"]
    what = (
        "one connection, {size} B text ping-pong"
        if unit == "message"
        else "connections one after another, each: handshake, one {size} B text echo, close"
    )
    out = [
        f"per-{unit} path, {meta['date']}, {meta['command']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        what.format(size=meta["size"])
        + f"; ({meta['m']} - {meta['n']}) {unit}s subtracted, PYTHONHASHSEED=0",
        "",
    ]
    counted = results["instructions_per_unit"]
    if counted:
        base = counted.get("bare", {}).get("per_message")
        out.append(f"{'server':<16}{'instructions/' + unit:>25}{'x bare':>9}{'+ vs bare':>11}")
        for kind, row in counted.items():
            per = row["per_message"]
            versus = f"{per / base:.3f}" if base else "-"
            extra = f"{per - base:+,.0f}" if base else "-"
            out.append(f"{kind:<16}{per:>25,.0f}{versus:>9}{extra:>11}")
        out.append("")
    base_rows = profiles.get("bare")
    if base_rows is not None:
        base_calls = {function: calls for function, calls, _ in base_rows}
        for kind, rows in profiles.items():
            if kind == "bare":
                continue
            calls = {function: count for function, count, _ in rows}
            diffs = [
                (calls.get(f, 0.0) - base_calls.get(f, 0.0), f)
                for f in sorted(set(calls) | set(base_calls))
                if "__new__ of type object" not in f  # an address, differs run to run
            ]
            diffs = [(d, f) for d, f in diffs if abs(d) >= 0.5]
            diffs.sort(key=lambda row: (-abs(row[0]), row[1]))
            total = sum(calls.values()) - sum(base_calls.values())
            out.append(f"## {kind} vs bare: {total:+.1f} Python-level calls per {unit}")
            out.append("(a coroutine counts one call each time it is resumed)")
            out.extend(f"{d:>+10.2f}  {f}" for d, f in diffs)
            out.append("")
    for kind, rows in profiles.items():
        total = sum(row[1] for row in rows)
        out.append(f"## {kind}: {total:.1f} Python-level calls per {unit} (cProfile)")
        out.append(f"{'calls':>10}  {'own us':>10}  function (per {unit})")
        for function, count, own in rows[:top]:
            out.append(f"{count:>10.2f}  {own * 1e6:>10.2f}  {function}")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
