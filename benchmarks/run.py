"""Benchmarks: trio_bocaws against a bare ASGI app, Starlette and trio-websocket.

    python benchmarks/run.py                  # everything, 5 repetitions (about 30 minutes)
    python benchmarks/run.py --quick          # a couple of minutes
    python benchmarks/run.py --scenario 'pingpong-16*' --scenario churn
    python benchmarks/run.py --servers bare,trio_bocaws --repeat 5

Needs ``npm ci --prefix benchmarks`` (the load generator's ``ws`` package) and, for the
Starlette server, ``pip install -r benchmarks/requirements.txt``. Every server gets a fresh
process for every measurement; the servers are measured one after the other within each
repetition, in a rotating order, and each figure is the median over the repetitions.
Ratios are to the bare ASGI app measured in the same run. A measurement during which other
processes kept the server's core busy (``--max-other-load``) is taken again, up to
``--retries`` times, and the quietest attempt kept. Prints tables and writes JSON
(``--json``, by default ``benchmarks/results/run-<time>.json``). It never fails on a
timing: the targets are printed as met or missed, for a person to read.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BenchmarkError,
    measure_idle,
    measure_interleaved,
    measure_load,
    median_of,
    pin_self,
    pinning,
    publish,
    rotated,
    summarize_windows,
    table,
    versions,
)

DEFAULT_SERVERS = ("bare", "trio_bocaws", "starlette", "trio-websocket")
BASELINE = "bare"

# name -> what the client does. Sizes in bytes; "connections" for churn is the number of
# parallel open/echo/close loops.
SCENARIOS: dict[str, dict[str, Any]] = {
    "pingpong-1-16B": {"mode": "pingpong", "connections": 1, "size": 16, "binary": False},
    "pingpong-1-1KiB": {"mode": "pingpong", "connections": 1, "size": 1024, "binary": False},
    "pingpong-1-64KiB-bin": {"mode": "pingpong", "connections": 1, "size": 65536, "binary": True},
    "pingpong-16-16B": {"mode": "pingpong", "connections": 16, "size": 16, "binary": False},
    "pingpong-16-1KiB": {"mode": "pingpong", "connections": 16, "size": 1024, "binary": False},
    "pingpong-16-64KiB-bin": {
        "mode": "pingpong",
        "connections": 16,
        "size": 65536,
        "binary": True,
    },
    "pipelined-8x16": {
        "mode": "pipelined",
        "connections": 8,
        "depth": 16,
        "size": 16,
        "binary": False,
    },
    "churn": {"mode": "churn", "connections": 8, "size": 16, "binary": False},
    "idle-1k": {"mode": "idle", "connections": 1000},
    "idle-5k": {"mode": "idle", "connections": 5000},
    "idle-10k": {"mode": "idle", "connections": 10000},
}
QUICK_SCENARIOS = (
    "pingpong-1-16B",
    "pingpong-16-16B",
    "pingpong-16-1KiB",
    "pingpong-16-64KiB-bin",
    "pipelined-8x16",
    "churn",
    "idle-1k",
)

# The targets for trio_bocaws, from the project's issue.
CPU_TARGET = 1.05  # server CPU per message at most 5% above the bare app
MEMORY_TARGET = 2048  # at most 2 KiB more per idle connection than the bare app


def select_scenarios(patterns: Sequence[str], quick: bool) -> list[str]:
    if not patterns:
        return list(QUICK_SCENARIOS if quick else SCENARIOS)
    chosen: list[str] = []
    for pattern in patterns:
        found = [n for n in SCENARIOS if fnmatch.fnmatchcase(n, pattern) or n == pattern]
        if not found:
            raise SystemExit(f"no scenario matches {pattern!r}; known: {', '.join(SCENARIOS)}")
        chosen.extend(n for n in found if n not in chosen)
    return chosen


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    scenarios = select_scenarios(arguments.scenario, arguments.quick)
    servers = arguments.servers
    runs: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    for name in scenarios:
        scenario = SCENARIOS[name]
        if scenario["mode"] != "idle" and not arguments.sequential:
            label = f"[{time.monotonic() - started:6.0f}s] {name}: "
            print(label + f"{arguments.rounds} rounds of {len(servers)} windows", file=sys.stderr)
            try:
                windows = measure_interleaved(
                    servers, scenario, arguments.rounds, arguments.duration, arguments.warmup
                )
            except BenchmarkError as exc:
                print(f"  FAILED: {exc}", file=sys.stderr)
                summary[name] = {kind: {"runs": 0} for kind in servers}
                continue
            for kind, rows in windows.items():
                runs.extend({"scenario": name, "server": kind, **row} for row in rows)
            summary[name] = summarize_windows(windows, BASELINE)
            for kind in servers:
                print(
                    "  " + _progress(scenario, {"server": kind, **summary[name][kind]}),
                    file=sys.stderr,
                )
            continue
        for rep in range(arguments.repeat):
            for kind in rotated(servers, rep):
                label = f"[{time.monotonic() - started:6.0f}s] {name} {kind} #{rep + 1}"
                print(label, end=" ", flush=True, file=sys.stderr)
                result = _measure(kind, scenario, arguments)
                print(_progress(scenario, result), file=sys.stderr)
                runs.append({"scenario": name, "server": kind, "rep": rep + 1, **result})
        summary[name] = {
            kind: _median(
                [
                    r
                    for r in runs
                    if r["scenario"] == name and r["server"] == kind and "error" not in r
                ]
            )
            for kind in servers
        }
    return {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "pinned": pinning(),
            "versions": versions(),
            "method": "sequential" if arguments.sequential else "interleaved",
            "repeat": arguments.repeat,
            "rounds": arguments.rounds,
            "warmup_s": arguments.warmup,
            "duration_s": arguments.duration,
            "max_other_load": arguments.max_other_load,
            "retries": arguments.retries,
            "servers": servers,
            "scenarios": {name: SCENARIOS[name] for name in scenarios},
            "elapsed_s": round(time.monotonic() - started, 1),
        },
        "summary": summary,
        "runs": runs,
    }


def _measure(
    kind: str, scenario: Mapping[str, Any], arguments: argparse.Namespace
) -> dict[str, Any]:
    """One measurement; again (up to --retries times) while other processes kept the
    server's core busier than --max-other-load, keeping the quietest attempt."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + arguments.retries):
        try:
            if scenario["mode"] == "idle":
                result = measure_idle(kind, scenario["connections"])
            else:
                result = measure_load(kind, scenario, arguments.warmup, arguments.duration)
        except BenchmarkError as exc:
            if best is None:
                best = {"error": str(exc)}
            continue
        result["attempt"] = attempt + 1
        if (
            best is None
            or "error" in best
            or result["other_load_server_core"] < best["other_load_server_core"]
        ):
            best = result
        if result["other_load_server_core"] <= arguments.max_other_load:
            break
    assert best is not None
    best["attempts"] = attempt + 1
    return best


def _progress(scenario: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    if "error" in result:
        return f"FAILED: {result['error']}"
    if "cpu_ratio_median" in result:  # interleaved windows, summed
        if not result.get("runs"):
            return f"{result['server']}: no windows"
        ratio = result["cpu_ratio_median"]
        return (
            f"{result['server']}: {result['rate']:.0f}/s, "
            f"{result['server_cpu_us_per_msg']:.1f} us/msg"
            + (f" ({ratio:.3f} x bare, paired)" if ratio else "")
            + f", server {result['server_util']:.0%}, client {result['client_util']:.0%}, "
            f"other load {result['other_load_server_core']:.0%}"
        )
    busy = (
        f", other load {result['other_load_server_core']:.0%} "
        f"(attempt {result['attempt']} of {result['attempts']})"
    )
    if scenario["mode"] == "idle":
        return (
            f"open {result['open_rate']:.0f}/s, echo {result['echo_seconds']:.2f}s, "
            f"{result['rss_per_conn'] / 1024:.1f} KiB/conn, "
            f"answered {result['answered']}/{result['opened']}{busy}"
        )
    return (
        f"{result['rate']:.0f}/s, {result['server_cpu_us_per_msg']:.1f} us/msg, "
        f"server {result['server_util']:.0%}, client {result['client_util']:.0%}{busy}"
    )


def _median(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not runs:
        return {"runs": 0}
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k != "rep"]
    medians = {key: median_of(runs, key) for key in keys}
    medians["runs"] = len(runs)
    return medians


# -- Printing ------------------------------------------------------------------------------


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}"


def number(value: float | None, digits: int = 1, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def report(results: Mapping[str, Any]) -> str:
    meta = results["meta"]
    out = [
        f"trio_bocaws benchmarks, {meta['date']}, {meta['command']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        _method(meta),
        f"server pinned to core 0, client to core 1: {'yes' if meta['pinned'] else 'NO'}; "
        "x bare = ratio to the bare ASGI app; paired = median over rounds of the CPU/msg "
        "ratio to bare in the same round, with quartiles",
        "",
    ]
    for name, by_server in results["summary"].items():
        scenario = meta["scenarios"][name]
        base = by_server.get(BASELINE, {})
        out.append(f"## {name}: {_describe(scenario)}")
        if scenario["mode"] == "idle":
            out.append(_idle_table(by_server, base))
        else:
            out.append(_load_table(scenario, by_server, base))
        out.append("")
    out.append(_targets(results))
    return "\n".join(out)


def _method(meta: Mapping[str, Any]) -> str:
    idle = f"idle scenarios: {meta['repeat']} repetition(s), medians"
    if meta["method"] == "sequential":
        return (
            f"load scenarios: one server at a time, {meta['warmup_s']} s warm-up, "
            f"{meta['duration_s']} s measured, {meta['repeat']} repetition(s), medians; {idle}"
        )
    return (
        f"load scenarios: all servers up at once, {meta['rounds']} rounds of "
        f"{meta['duration_s']} s windows per server in rotating order (after "
        f"{meta['warmup_s']} s warm-up), summed; {idle}"
    )


def _describe(scenario: Mapping[str, Any]) -> str:
    mode = scenario["mode"]
    if mode == "idle":
        return f"{scenario['connections']} idle connections held, then one 16 B echo on each"
    size = scenario["size"]
    kind = "binary" if scenario["binary"] else "text"
    what = f"{size} B {kind}" if size < 1024 else f"{size // 1024} KiB {kind}"
    if mode == "pingpong":
        return f"ping-pong, {scenario['connections']} connection(s), {what}"
    if mode == "pipelined":
        return f"{scenario['connections']} connections, {scenario['depth']} in flight each, {what}"
    return f"open, one {what} echo, close; {scenario['connections']} loops in parallel"


def _load_table(
    scenario: Mapping[str, Any], by_server: Mapping[str, Any], base: Mapping[str, Any]
) -> str:
    unit = "conn" if scenario["mode"] == "churn" else "msg"
    header = [
        "server",
        f"{unit}/s",
        "x bare",
        "p50 ms",
        "p99 ms",
        f"srv us/{unit}",
        "x bare",
        "paired [q1-q3]",
        "srv CPU",
        "srv RSS MiB",
        f"cli us/{unit}",
        "cli CPU",
        "other load",
    ]
    rows = []
    for kind, m in by_server.items():
        if not m.get("runs"):
            rows.append([kind, "failed", *["-"] * (len(header) - 2)])
            continue
        rows.append(
            [
                kind,
                number(m["rate"], 0),
                ratio(m["rate"], base.get("rate")),
                number(m["p50_ms"], 3),
                number(m["p99_ms"], 3),
                number(m["server_cpu_us_per_msg"], 1),
                ratio(m["server_cpu_us_per_msg"], base.get("server_cpu_us_per_msg")),
                _paired(m),
                number(m["server_util"], 0, 100) + "%",
                number(m["server_rss_end"], 1, 1 / 2**20),
                number(m["client_cpu_us_per_msg"], 1),
                number(m["client_util"], 0, 100) + "%",
                number(m["other_load_server_core"], 0, 100) + "%",
            ]
        )
    return table(header, rows)


def _paired(m: Mapping[str, Any]) -> str:
    """The median of the per-round CPU ratios to bare, with its quartiles."""
    if m.get("cpu_ratio_median") is None:
        return "-"
    if m.get("cpu_ratio_q1") is None:
        return f"{m['cpu_ratio_median']:.3f}"
    return f"{m['cpu_ratio_median']:.3f} [{m['cpu_ratio_q1']:.2f}-{m['cpu_ratio_q3']:.2f}]"


def _idle_table(by_server: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    header = [
        "server",
        "opened",
        "open/s",
        "first->last 10%",
        "srv us/open",
        "echo s",
        "x bare",
        "answered",
        "RSS MiB",
        "KiB/conn",
        "x bare",
        "+KiB vs bare",
    ]
    rows = []
    for kind, m in by_server.items():
        if not m.get("runs"):
            rows.append([kind, "failed", *["-"] * (len(header) - 2)])
            continue
        per_conn, base_per_conn = m["rss_per_conn"], base.get("rss_per_conn")
        rows.append(
            [
                kind,
                number(m["opened"], 0),
                number(m["open_rate"], 0),
                f"{number(m['open_rate_first'], 0)}->{number(m['open_rate_last'], 0)}",
                number(m["open_server_cpu_us_per_conn"], 0),
                number(m["echo_seconds"], 3),
                ratio(m["echo_seconds"], base.get("echo_seconds")),
                f"{number(m['answered'], 0)}{'' if m['all_answered'] else ' (NOT ALL)'}",
                number(m["server_rss_held"], 1, 1 / 2**20),
                number(per_conn, 1, 1 / 1024),
                ratio(per_conn, base_per_conn),
                "-" if base_per_conn is None else f"{(per_conn - base_per_conn) / 1024:+.1f}",
            ]
        )
    return table(header, rows)


def _targets(results: Mapping[str, Any]) -> str:
    out = [
        "## Targets for trio_bocaws (informational; never fails the run)",
        "(within noise: the quartiles of the paired ratio straddle the line; for a verdict on"
        " a few percent, count instructions with benchmarks/profile_path.py)",
    ]
    for name, by_server in results["summary"].items():
        ours = by_server.get("trio_bocaws", {})
        base = by_server.get(BASELINE, {})
        star = by_server.get("starlette", {})
        if not ours.get("runs") or not base.get("runs"):
            continue
        if "rss_per_conn" in ours:
            extra = ours["rss_per_conn"] - base["rss_per_conn"]
            verdict = "met" if extra <= MEMORY_TARGET else "MISSED"
            out.append(
                f"- {name}: {extra / 1024:+.2f} KiB per idle connection vs bare "
                f"(target <= +2 KiB): {verdict}"
            )
            continue
        # The paired ratio (same round) where there is one: it is the steadier figure.
        # Where its quartiles straddle the line, the run cannot tell: say so.
        mine, low, high = _cpu_ratio(ours, base)
        if mine <= CPU_TARGET:
            verdict = "met" if high <= CPU_TARGET else "met (within noise)"
        else:
            verdict = "MISSED (within noise)" if low <= CPU_TARGET else "MISSED"
        line = f"- {name}: server CPU/msg {mine:.3f} x bare (target <= {CPU_TARGET}): {verdict}"
        if star.get("runs"):
            theirs, _, their_high = _cpu_ratio(star, base)
            if mine <= theirs:
                standing = "not behind"
            elif low <= their_high:
                standing = "behind, within noise"
            else:
                standing = "BEHIND"
            line += f"; Starlette {theirs:.3f} x bare (trio_bocaws {standing})"
        out.append(line)
    return "\n".join(out)


def _cpu_ratio(m: Mapping[str, Any], base: Mapping[str, Any]) -> tuple[float, float, float]:
    """CPU per message as a ratio to bare: median, first and third quartile (the ratio of
    the medians, three times, where there are no paired rounds)."""
    if m.get("cpu_ratio_median") is not None:
        median = m["cpu_ratio_median"]
        return median, m.get("cpu_ratio_q1") or median, m.get("cpu_ratio_q3") or median
    ratio = m["server_cpu_us_per_msg"] / base["server_cpu_us_per_msg"]
    return ratio, ratio, ratio


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--quick", action="store_true", help="fewer scenarios, short, once")
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="a scenario name or glob (repeatable); default: all (or the quick set)",
    )
    parser.add_argument(
        "--servers",
        type=lambda s: [k.strip() for k in s.split(",") if k.strip()],
        default=list(DEFAULT_SERVERS),
        help=f"comma-separated (default {','.join(DEFAULT_SERVERS)}; also: bare+fixes)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="load scenarios: windows per server, alternating (default 10, quick 3)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="idle scenarios (and --sequential): repetitions (default 3, quick 1)",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds per load window (default 1.5, quick 1)"
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="load scenarios: one fresh server at a time, one long window each, --repeat "
        "times (instead of every server at once in alternating windows)",
    )
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 1, quick 0.5)")
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=0.25,
        metavar="FRACTION",
        help="measure again when other processes kept the server's core busier than this "
        "(default 0.25: a quarter of the core)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="at most this many times again (default 2)"
    )
    parser.add_argument("--json", type=Path, help="where to write the results")
    arguments = parser.parse_args(argv)
    quick = arguments.quick
    arguments.repeat = arguments.repeat or (1 if quick else 3)
    arguments.rounds = arguments.rounds or (3 if quick else 10)
    arguments.duration = arguments.duration or (1.0 if quick else 1.5)
    arguments.warmup = (
        arguments.warmup if arguments.warmup is not None else (0.5 if quick else 1.0)
    )

    pin_self()
    results = run(arguments)
    text = report(results)
    publish(results, text, arguments.json, f"run{'-quick' if quick else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
