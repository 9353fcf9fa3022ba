"""The garbage collector with 10,000 connections open: which setting holds up.

    python benchmarks/gc_experiment.py                         # the default variants, 3 times
    python benchmarks/gc_experiment.py --connections 5000 --repeat 1
    python benchmarks/gc_experiment.py --variant default --variant 'threshold=50000/20/100'

Runs the trio_bocaws server (``--server`` for another) once per variant of ``BENCH_GC``
(``runner``: none, so that the runner sets the collector as it does for users)
(see server.py) and repetition, variants in a rotating order, and for each:

1. opens N connections, 64 handshakes at a time (accept rate overall and in the first and
   last tenth; server CPU per accepted connection);
2. sends one 16 B message on every connection at once and waits for every echo, twice
   (the time each round takes; every connection must answer);
3. with the N connections still open, churns (open, one echo, close; 8 loops) for a few
   seconds: the rate, server CPU per connection, and how much the server's memory grew,
   which is where a setting that lets garbage cycles pile up shows;
4. closes all N connections properly, and counts the objects left behind (before and
   after a full collection) against the count before the first connection;

and reads the server's memory, and the collector's own count of collections and the time
spent in them (``gc.callbacks``), after each phase. Medians over the repetitions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BenchmarkError,
    Server,
    load_on,
    measure_idle,
    median_of,
    pin_self,
    pinning,
    publish,
    rotated,
    table,
    versions,
)

DEFAULT_VARIANTS = (
    "runner",
    "default",
    "off",
    "freeze",
    "freeze-every=1",
    "threshold=10000/10/10",
    "threshold=700/10/1000",
    "threshold=50000/20/100",
)
CHURN = {"mode": "churn", "connections": 8, "size": 16, "binary": False}


def gc_snapshot(
    server: Server, path: Path, collect: bool = False, timeout: float = 60.0
) -> dict[str, Any]:
    """Ask the server for its collector statistics (SIGUSR1), or for them after a full
    collection (SIGUSR2)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    server.process.send_signal(signal.SIGUSR2 if collect else signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime_ns != before:
            try:
                stats: dict[str, Any] = json.loads(path.read_text())
            except json.JSONDecodeError:
                time.sleep(0.02)  # caught it mid-write
                continue
            return stats
        time.sleep(0.02)
    raise BenchmarkError("the server did not write its gc statistics")


def one_run(
    kind: str, variant: str, connections: int, churn_seconds: float, workdir: Path
) -> dict[str, Any]:
    stats_path = workdir / f"gc-{os.getpid()}-{time.monotonic_ns()}.json"
    churn: dict[str, Any] = {}

    def on_phase(server: Server, phase: str) -> dict[str, Any]:
        if phase == "closed":
            time.sleep(1.0)  # let the server finish the closing handshakes
            uncollected = gc_snapshot(server, stats_path)
            return {"uncollected": uncollected, "collected": gc_snapshot(server, stats_path, True)}
        # The baseline after a full collection, as the last reading will be.
        snapshot = gc_snapshot(server, stats_path, collect=phase == "ready")
        if phase == "echoed" and churn_seconds > 0:
            churn.update(load_on(server, CHURN, 1.0, churn_seconds))
            churn["gc"] = gc_snapshot(server, stats_path)
        return snapshot

    result = measure_idle(
        kind,
        connections,
        # "runner": no BENCH_GC, so the server's runner sets the collector as it does for
        # users (trio_bocaws.serve does; the other servers leave it).
        env={"BENCH_GC_STATS": str(stats_path)}
        if variant == "runner"
        else {"BENCH_GC": variant, "BENCH_GC_STATS": str(stats_path)},
        rounds=2,
        on_phase=on_phase,
        close_all=True,
    )
    phases = result.pop("phases")
    ready, opened, echoed = phases["ready"], phases["opened"], phases["echoed"]
    closed = phases["closed"]

    def objects(snapshot: Mapping[str, Any]) -> int:
        return int(snapshot["tracked_objects"] + snapshot["frozen_objects"])

    served = result["opened"] + churn.get("messages", 0)

    def spent(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "gc_seconds": sum(b["seconds"]) - sum(a["seconds"]),
            "gc_full_collections": b["collections"][2] - a["collections"][2],
            "gc_collections": [
                y - x for x, y in zip(a["collections"], b["collections"], strict=True)
            ],
        }

    open_gc = spent(ready, opened)
    echo_gc = spent(opened, echoed)
    out = {
        **result,
        "echo_round2_seconds": result["echo_rounds_seconds"][-1],
        "open_gc_seconds": open_gc["gc_seconds"],
        "open_gc_full": open_gc["gc_full_collections"],
        "echo_gc_seconds": echo_gc["gc_seconds"],
        "echo_gc_full": echo_gc["gc_full_collections"],
        "tracked_objects_held": opened["tracked_objects"],
        "frozen_objects_held": opened["frozen_objects"],
        "objects_per_conn": (opened["tracked_objects"] + opened["frozen_objects"])
        / max(1, result["opened"]),
        "closed": closed["closed"],
        "close_seconds": closed["seconds"],
        # Objects still there once every connection has closed, per connection served:
        # garbage waiting for the collector, and (after a full collection) what it cannot
        # reach any more, i.e. cycles frozen while their connection was alive: a leak.
        "garbage_per_conn": (objects(closed["phase"]["uncollected"]) - objects(ready)) / served,
        "leaked_per_conn": (objects(closed["phase"]["collected"]) - objects(ready)) / served,
        "frozen_after_close": closed["phase"]["collected"]["frozen_objects"],
        "gc": {
            "ready": ready,
            "opened": opened,
            "echoed": echoed,
            "closed": closed["phase"],
        },
    }
    if churn:
        churn_gc = spent(echoed, churn["gc"])
        out.update(
            churn_rate=churn["rate"],
            churn_server_cpu_us_per_conn=churn["server_cpu_us_per_msg"],
            churn_rss_growth=churn["server_rss_growth"],
            churn_rss_growth_per_conn=churn["server_rss_growth"] / max(1, churn["messages"]),
            churn_connections=churn["messages"],
            churn_gc_seconds=churn_gc["gc_seconds"],
            churn_gc_full=churn_gc["gc_full_collections"],
            churn_cycles_collected=churn["gc"]["collected"] - echoed["collected"],
            churn_cycles_per_conn=(churn["gc"]["collected"] - echoed["collected"])
            / max(1, churn["messages"]),
        )
    return out


COLUMNS = (
    ("open/s", "open_rate", 0, 1),
    ("first 10%", "open_rate_first", 0, 1),
    ("last 10%", "open_rate_last", 0, 1),
    ("srv us/open", "open_server_cpu_us_per_conn", 0, 1),
    ("gc s open", "open_gc_seconds", 2, 1),
    ("full gcs", "open_gc_full", 0, 1),
    ("echo s", "echo_seconds", 2, 1),
    ("echo2 s", "echo_round2_seconds", 2, 1),
    ("gc s echo", "echo_gc_seconds", 2, 1),
    ("answered", "answered", 0, 1),
    ("RSS MiB", "server_rss_held", 0, 1 / 2**20),
    ("KiB/conn", "rss_per_conn", 1, 1 / 1024),
    ("churn/s", "churn_rate", 0, 1),
    ("srv us/churn", "churn_server_cpu_us_per_conn", 0, 1),
    ("churn +MiB", "churn_rss_growth", 1, 1 / 2**20),
    ("gc s churn", "churn_gc_seconds", 2, 1),
    ("cycles/churn", "churn_cycles_per_conn", 1, 1),
    ("garbage/conn", "garbage_per_conn", 1, 1),
    ("leaked/conn", "leaked_per_conn", 1, 1),
)


def report(results: Mapping[str, Any]) -> str:
    meta = results["meta"]
    out = [
        f"GC experiment, {meta['date']}, {meta['command']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"{meta['server']} server, {meta['connections']} connections, "
        f"{meta['repeat']} repetition(s), medians; pinned: {'yes' if meta['pinned'] else 'NO'}",
        "",
    ]
    header = ["variant", *(c[0] for c in COLUMNS)]
    rows = []
    for variant, m in results["summary"].items():
        if not m.get("runs"):
            rows.append([variant, "failed", *["-"] * (len(COLUMNS) - 1)])
            continue
        row = [variant]
        for _, key, digits, scale in COLUMNS:
            value = m.get(key)
            row.append("-" if value is None else f"{value * scale:,.{digits}f}")
        rows.append(row)
    out.append(table(header, rows))
    out.append("")
    out.append(
        "gc s = seconds the server spent inside the collector in that phase (gc.callbacks); "
        "full gcs = generation-2 collections; cycles/churn = objects the collector freed per "
        "churned connection (garbage that only the collector can free: with the collector "
        "off, or frozen before it is collected, this is what leaks); after closing every "
        "connection, objects left per connection served: garbage/conn before a full "
        "collection, leaked/conn after one (frozen cycles, never freed)."
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", action="append", default=[], help="a BENCH_GC value")
    parser.add_argument(
        "--server", default="trio_bocaws", help="server kind (default trio_bocaws; also bare)"
    )
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--churn", type=float, default=8.0, help="seconds of churn (0: none)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    arguments = parser.parse_args(argv)
    variants = arguments.variant or list(DEFAULT_VARIANTS)
    pin_self()
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as workdir:
        for rep in range(arguments.repeat):
            for variant in rotated(variants, rep):
                print(
                    f"[{time.monotonic() - started:6.0f}s] {variant} #{rep + 1}",
                    end=" ",
                    flush=True,
                    file=sys.stderr,
                )
                try:
                    result = one_run(
                        arguments.server,
                        variant,
                        arguments.connections,
                        arguments.churn,
                        Path(workdir),
                    )
                except BenchmarkError as exc:
                    print(f"FAILED: {exc}", file=sys.stderr)
                    runs.append({"variant": variant, "rep": rep + 1, "error": str(exc)})
                    continue
                print(
                    f"open {result['open_rate']:.0f}/s "
                    f"({result['open_rate_first']}->{result['open_rate_last']}), "
                    f"echo {result['echo_seconds']:.2f}s/{result['echo_round2_seconds']:.2f}s, "
                    f"answered {result['answered']}/{result['opened']}, "
                    f"gc {result['open_gc_seconds']:.2f}s+{result['echo_gc_seconds']:.2f}s, "
                    f"churn {result.get('churn_rate', 0):.0f}/s",
                    file=sys.stderr,
                )
                runs.append({"variant": variant, "rep": rep + 1, **result})
    summary = {}
    for variant in variants:
        good = [r for r in runs if r["variant"] == variant and "error" not in r]
        keys = {k for r in good for k, v in r.items() if isinstance(v, (int, float))} - {"rep"}
        summary[variant] = {k: median_of(good, k) for k in sorted(keys)} | {"runs": len(good)}
    results = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "benchmarks/gc_experiment.py", *sys.argv[1:]]),
            "versions": versions(),
            "pinned": pinning(),
            "server": arguments.server,
            "connections": arguments.connections,
            "repeat": arguments.repeat,
            "churn_s": arguments.churn,
            "elapsed_s": round(time.monotonic() - started, 1),
        },
        "summary": summary,
        "runs": runs,
    }
    text = report(results)
    publish(results, text, arguments.json, "gc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
