"""What run.py and gc_experiment.py share: starting servers and the load generator, and
reading a process's CPU time and memory from /proc.

The server runs pinned to core 0 and the load generator (and this process) to core 1, so
that the client never takes CPU from the server it measures. Server CPU time is read from
/proc/PID/stat (utime + stime, every thread) at the moments the client says a measurement
starts and ends; the client keeps the load running across both readings.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "server.py"
CLIENT_SCRIPT = HERE / "client.mjs"

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

SERVER_CORE = 0
CLIENT_CORE = 1


class BenchmarkError(Exception):
    """A server or the client misbehaved; the message says which and how."""


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as file:
        # The command name (field 2) may hold spaces; it ends at the last ')'.
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as file:
        return int(file.read().split()[1]) * PAGE_SIZE


def core_busy_seconds(core: int) -> float:
    """Time one core spent running processes (user, nice, system) or taken by the
    hypervisor (steal), from /proc/stat. Interrupt and softirq time is left out: much of
    it is the kernel's network work for the server's own connections."""
    with open("/proc/stat") as file:
        for line in file:
            if line.startswith(f"cpu{core} "):
                user, nice, system, _, _, _, _, steal = (int(v) for v in line.split()[1:9])
                return (user + nice + system + steal) / CLOCK_TICKS
    return 0.0


class Sample:
    """A server's CPU time and memory, and its core's busy time, at one moment."""

    def __init__(self, pid: int) -> None:
        self.time = time.perf_counter()
        self.cpu = cpu_seconds(pid)
        self.rss = rss_bytes(pid)
        self.core_busy = core_busy_seconds(SERVER_CORE) if pinning() else 0.0

    def other_load(self, later: Sample) -> float:
        """How busy the server's core was with other processes between two samples."""
        wall = later.time - self.time
        if not pinning() or wall <= 0:
            return 0.0
        other = (later.core_busy - self.core_busy) - (later.cpu - self.cpu)
        return max(0.0, other / wall)


# -- Processes -----------------------------------------------------------------------------


# Decided once, before pin_self() narrows this process's own affinity.
_PINNING = (
    os.environ.get("BENCH_NO_PIN") != "1"
    and shutil.which("taskset") is not None
    and {SERVER_CORE, CLIENT_CORE} <= os.sched_getaffinity(0)
)


def pinning() -> bool:
    """Whether the server and the client run on cores of their own (BENCH_NO_PIN=1: no)."""
    return _PINNING


def pinned(core: int, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(core), *command] if pinning() else list(command)


def pin_self() -> None:
    """Keep this process off the server's core."""
    if pinning():
        os.sched_setaffinity(0, {CLIENT_CORE})


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class LineReader:
    """Lines from a child's stdout, with a deadline for each."""

    def __init__(self, process: subprocess.Popen[bytes], what: str) -> None:
        assert process.stdout is not None
        self._process = process
        self._stream = process.stdout
        self._what = what
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stream, selectors.EVENT_READ)

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchmarkError(f"{self._what}: nothing said within {timeout:.0f} s")
            if self._selector.select(left):
                chunk = os.read(self._stream.fileno(), 65536)
                if not chunk:
                    code = self._process.wait()
                    raise BenchmarkError(f"{self._what} exited (status {code})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        self._selector.close()


class Server:
    """A benchmark server process (server.py), pinned to the server core."""

    def __init__(
        self,
        kind: str,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
        startup_timeout: float = 60.0,
    ) -> None:
        self.kind = kind
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the server)
        command = [*wrapper, sys.executable, str(SERVER_SCRIPT), kind]
        self.process = subprocess.Popen(
            pinned(SERVER_CORE, command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.process.pid
        reader = LineReader(self.process, f"server {kind}")
        try:
            line = reader.readline(startup_timeout)
        except BenchmarkError as exc:
            self.kill()
            raise BenchmarkError(f"{exc}\n{self.log_tail()}") from None
        finally:
            reader.close()
        if not line.startswith("PORT "):
            self.kill()
            raise BenchmarkError(f"server {kind} said {line!r} instead of its port")
        self.port = int(line.split()[1])

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def sample(self) -> Sample:
        return Sample(self.pid)

    def log_tail(self, limit: int = 4000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-limit:]

    def stop(self, timeout: float = 60.0) -> int:
        """Graceful: SIGTERM, then wait."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchmarkError(f"server {self.kind} ignored SIGTERM for {timeout} s") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class Client:
    """The Node.js load generator (client.mjs), pinned to the client core."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        node = shutil.which("node")
        if node is None:
            raise BenchmarkError("node is not on PATH (Node.js 18 or later is needed)")
        if not (HERE / "node_modules" / "ws").is_dir():
            raise BenchmarkError(f"the ws package is missing: run `npm ci --prefix {HERE}`")
        self.process = subprocess.Popen(
            pinned(CLIENT_CORE, [node, str(CLIENT_SCRIPT), json.dumps(dict(config))]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_raise_fd_limit,  # the client holds up to 10k sockets
        )
        self._reader = LineReader(self.process, "client")

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        line = self._reader.readline(timeout)
        try:
            message: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise BenchmarkError(f"client said {line!r}") from None
        if message.get("event") != event:
            raise BenchmarkError(f"client: expected {event!r}, got {message}")
        return message

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 30.0) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.close()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with suppress(OSError):
                    stream.close()


@contextmanager
def running_server(kind: str, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    server = Server(kind, env)
    try:
        yield server
    finally:
        server.kill()


# -- Measurements --------------------------------------------------------------------------


def measure_load(
    kind: str,
    scenario: Mapping[str, Any],
    warmup: float,
    duration: float,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One load run (pingpong, pipelined or churn) against a fresh server."""
    with running_server(kind, env) as server:
        return load_on(server, scenario, warmup, duration)


def load_on(
    server: Server, scenario: Mapping[str, Any], warmup: float, duration: float
) -> dict[str, Any]:
    """One load run against a running server."""
    rss_start = rss_bytes(server.pid)
    path = "/echo-bytes" if scenario["binary"] else "/echo"
    client = Client(
        {
            "mode": scenario["mode"],
            "url": server.url(path),
            "connections": scenario["connections"],
            "depth": scenario.get("depth", 1),
            "size": scenario["size"],
            "binary": scenario["binary"],
            "warmup": warmup,
            "duration": duration,
        }
    )
    try:
        client.expect("ready", 60)
        client.expect("start", warmup + 30)
        before = server.sample()
        end = client.expect("end", duration + 30)
        after = server.sample()
        client.tell("stop")
        client.finish()
    finally:
        client.close()
    messages = end["messages"]
    server_cpu = after.cpu - before.cpu
    wall = after.time - before.time
    return {
        "messages": messages,
        "seconds": end["seconds"],
        "rate": messages / end["seconds"],
        "p50_ms": end["p50_ms"],
        "p99_ms": end["p99_ms"],
        "mean_ms": end["mean_ms"],
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_msg": server_cpu / messages * 1e6 if messages else None,
        "server_util": server_cpu / wall if wall > 0 else None,
        "server_rss_start": rss_start,
        "server_rss_end": after.rss,
        "server_rss_growth": after.rss - rss_start,
        "client_cpu_s": end["client_cpu_s"],
        "client_cpu_us_per_msg": end["client_cpu_s"] / messages * 1e6 if messages else None,
        "client_util": end["client_cpu_s"] / end["seconds"],
        "other_load_server_core": before.other_load(after),
        "failures": end.get("failures", 0) + end.get("lost", 0),
    }


def measure_interleaved(
    kinds: Sequence[str],
    scenario: Mapping[str, Any],
    rounds: int,
    window: float,
    warmup: float,
    env: Mapping[str, str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Several servers under one load, in alternating windows.

    Every server runs at once (all on the server core, only one of them loaded at a
    time), each with its own client. Each round loads each server for ``window`` seconds,
    in a rotating order; the windows of one round are seconds apart, so a machine that
    gets busier or quieter weighs on all the servers alike. Returns each server's windows.
    """
    servers: dict[str, Server] = {}
    clients: dict[str, Client] = {}
    windows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    try:
        for kind in kinds:
            servers[kind] = server = Server(kind, env)
            clients[kind] = Client(
                {
                    "mode": scenario["mode"],
                    "windows": True,
                    "url": server.url("/echo-bytes" if scenario["binary"] else "/echo"),
                    "connections": scenario["connections"],
                    "depth": scenario.get("depth", 1),
                    "size": scenario["size"],
                    "binary": scenario["binary"],
                    "warmup": warmup,
                }
            )
        for kind in kinds:  # they warm up at the same time: not measured
            clients[kind].expect("ready", warmup + 60)
        for round_ in range(rounds):
            for kind in rotated(kinds, round_):
                server, client = servers[kind], clients[kind]
                before = server.sample()
                client.tell("run")
                time.sleep(window)
                client.tell("pause")
                result = client.expect("paused", 60)
                after = server.sample()
                windows[kind].append(
                    {
                        "round": round_ + 1,
                        "messages": result["messages"],
                        "seconds": result["seconds"],
                        "p50_ms": result["p50_ms"],
                        "p99_ms": result["p99_ms"],
                        "server_cpu_s": after.cpu - before.cpu,
                        "wall_s": after.time - before.time,
                        "client_cpu_s": result["client_cpu_s"],
                        "failures": result["failures"],
                        "other_load_server_core": before.other_load(after),
                        "server_rss": after.rss,
                    }
                )
        for client in clients.values():
            client.tell("stop")
        for client in clients.values():
            client.finish()
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.kill()
    return windows


def summarize_windows(
    windows: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str
) -> dict[str, dict[str, Any]]:
    """Totals over each server's windows, and its CPU per message as a ratio to the
    baseline's in the same round (the median and quartiles of those paired ratios)."""

    def per_message(window: Mapping[str, Any]) -> float | None:
        return window["server_cpu_s"] / window["messages"] if window["messages"] else None

    summary: dict[str, dict[str, Any]] = {}
    base_by_round = {w["round"]: per_message(w) for w in windows.get(baseline, [])}
    for kind, rows in windows.items():
        if not rows:
            summary[kind] = {"runs": 0}
            continue
        messages = sum(w["messages"] for w in rows)
        seconds = sum(w["seconds"] for w in rows)
        cpu = sum(w["server_cpu_s"] for w in rows)
        wall = sum(w["wall_s"] for w in rows)
        client_cpu = sum(w["client_cpu_s"] for w in rows)
        ratios = []
        for w in rows:
            mine, base = per_message(w), base_by_round.get(w["round"])
            if mine and base:
                ratios.append(mine / base)
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [None] * 3
        summary[kind] = {
            "runs": len(rows),
            "messages": messages,
            "seconds": seconds,
            "rate": messages / seconds if seconds else None,
            "p50_ms": median_of(rows, "p50_ms"),
            "p99_ms": median_of(rows, "p99_ms"),
            "server_cpu_s": cpu,
            "server_cpu_us_per_msg": cpu / messages * 1e6 if messages else None,
            "server_util": cpu / wall if wall else None,
            "server_rss_end": rows[-1]["server_rss"],
            "client_cpu_us_per_msg": client_cpu / messages * 1e6 if messages else None,
            "client_util": client_cpu / seconds if seconds else None,
            "other_load_server_core": median_of(rows, "other_load_server_core"),
            "failures": sum(w["failures"] for w in rows),
            "cpu_ratio_median": statistics.median(ratios) if ratios else None,
            "cpu_ratio_q1": quartiles[0],
            "cpu_ratio_q3": quartiles[2],
        }
    return summary


def measure_idle(
    kind: str,
    connections: int,
    env: Mapping[str, str] | None = None,
    rounds: int = 1,
    concurrency: int = 64,
    on_phase: Any = None,
    close_all: bool = False,
) -> dict[str, Any]:
    """Open ``connections`` to a fresh server, hold them, then echo once on every one
    (``rounds`` times), then with ``close_all`` close them all properly.

    ``on_phase(server, name)`` is called after each phase's sample, for extra readings.
    """
    extra: dict[str, Any] = {}
    with running_server(kind, env) as server:
        client = Client(
            {
                "mode": "idle",
                "url": server.url("/echo"),
                "connections": connections,
                "size": 16,
                "binary": False,
                "rounds": rounds,
                "round_timeout": 120,
                "concurrency": concurrency,
            }
        )
        try:
            client.expect("ready", 60)
            base = server.sample()
            if on_phase:
                extra["ready"] = on_phase(server, "ready")
            client.tell("go")
            opened = client.expect("opened", 600)
            held = server.sample()
            if on_phase:
                extra["opened"] = on_phase(server, "opened")
            client.tell("go")
            echoed = client.expect("echoed", 130 * rounds + 30)
            after = server.sample()
            if on_phase:
                extra["echoed"] = on_phase(server, "echoed")
            if close_all:
                client.tell("close")
                extra["closed"] = client.expect("closed", 120)
                if on_phase:
                    extra["closed"]["phase"] = on_phase(server, "closed")
            server.kill()
            client.tell("stop")
            client.finish()
        finally:
            client.close()
    count = opened["opened"]
    first_round = echoed["rounds"][0]
    answered = sum(r["answered"] for r in echoed["rounds"])
    windows = opened["window_rates"]
    return {
        "connections": connections,
        "opened": count,
        "failed": opened["failed"],
        "open_seconds": opened["seconds"],
        "open_rate": opened["rate"],
        "open_rate_first": windows[0] if windows else None,
        "open_rate_last": windows[-1] if windows else None,
        "window_rates": windows,
        "open_server_cpu_s": held.cpu - base.cpu,
        "open_server_cpu_us_per_conn": (held.cpu - base.cpu) / count * 1e6 if count else None,
        "echo_seconds": first_round["seconds"],
        "echo_rounds_seconds": [r["seconds"] for r in echoed["rounds"]],
        "echo_server_cpu_s": after.cpu - held.cpu,
        "answered": first_round["answered"],
        "answered_all_rounds": answered,
        "all_answered": all(
            r["answered"] == count and not r["timed_out"] for r in echoed["rounds"]
        )
        and echoed["closed_early"] == 0,
        "closed_early": echoed["closed_early"],
        "server_rss_base": base.rss,
        "server_rss_held": held.rss,
        "server_rss_after_echo": after.rss,
        "rss_per_conn": (held.rss - base.rss) / count if count else None,
        "other_load_server_core": base.other_load(after),
        **({"phases": extra} if extra else {}),
    }


# -- Summaries -----------------------------------------------------------------------------


def median_of(runs: Sequence[Mapping[str, Any]], key: str) -> Any:
    values = [run[key] for run in runs if isinstance(run.get(key), (int, float))]
    if not values:
        return None
    if all(isinstance(v, bool) for v in values):
        return all(values)
    return statistics.median(values)


def rotated(items: Sequence[str], by: int) -> list[str]:
    """The servers in a different order each repetition, so none always goes first."""
    if not items:
        return []
    by %= len(items)
    return [*items[by:], *items[:by]]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to fit: the first left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    out = [line, "-" * len(line)]
    for row in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(out)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in (
        "trio",
        "hypercorn",
        "wsproto",
        "h11",
        "trio-websocket",
        "websockets",
        "starlette",
        "anyio",
    ):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    found["trio_bocaws"] = _trio_bocaws_version()
    node = shutil.which("node")
    if node:
        found["node"] = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        package = HERE / "node_modules" / "ws" / "package.json"
        if package.exists():
            found["ws"] = json.loads(package.read_text())["version"]
    return found


def _trio_bocaws_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("trio-bocaws")
    except PackageNotFoundError:
        return "missing"

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(HERE.parent), *arguments],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return found
    # Uncommitted changes to the package are measured too: say so.
    dirty = "+changes" if git("status", "--porcelain", "--", "trio_bocaws") else ""
    return f"{found} ({head}{dirty})"


def publish(results: Mapping[str, Any], text: str, path: Path | None, prefix: str) -> None:
    """Print the report, and write it with the results as JSON to ``path`` (by default a
    new file under ``benchmarks/results/`` named after ``prefix`` and the time)."""
    print(text)
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = HERE / "results" / f"{prefix}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**results, "report": text}, indent=1) + "\n")
    print(f"\nJSON results: {path}")
