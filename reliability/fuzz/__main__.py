"""``python -m reliability.fuzz``: a fuzz campaign against trio_bocaws, figures on stdout.

Exit status 0 when no session crashed the worker, broke the bystander or a fresh
connection, or got stuck; 1 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings

import trio

from ._actions import Transport, parse_session, sessions
from ._campaign import KNOWN_CRASHES, Report, campaign, minimize
from ._target import FuzzTarget, Outcome


def _commit() -> str:
    try:
        found = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return found.stdout.strip()


def _progress(report: Report) -> None:
    print(
        f"  ... {report.sessions} sessions, {sum(report.crashes.values())} crashes, "
        f"{report.bystander_failures} bystander failures, {report.seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )


async def _replay(text: str, times: int) -> Report:
    session = parse_session(text)
    report = Report()
    async with FuzzTarget(quiet=True) as target:
        for _ in range(times):
            outcome = await target.run(session)
            report.add(session, outcome)
            print(outcome)
        print(report.summary())
        for signature in report.crashes:
            print(target.traceback_of(signature))
    return report


async def _main(arguments: argparse.Namespace) -> Report:
    transports = tuple(Transport(name) for name in arguments.transports.split(","))
    async with FuzzTarget(quiet=not arguments.verbose) as target:
        report = await campaign(
            target,
            sessions(transports),
            sessions=arguments.sessions,
            seed=arguments.seed,
            explicit=KNOWN_CRASHES if arguments.known else (),
            progress=_progress,
        )
        print(report.summary())
        if arguments.minimize:
            for signature in report.crashes:

                def crashes(outcome: Outcome, signature: str = signature) -> bool:
                    return signature in outcome.crashes

                shortest = await minimize(target, report.shortest[signature], crashes)
                print(f"\nminimal reproduction of {signature}:\n  {shortest!r}")
                print(target.traceback_of(signature))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.fuzz", description=__doc__)
    parser.add_argument("--sessions", type=int, default=None, help="default 10000")
    parser.add_argument(
        "--seed", type=int, default=None, help="Hypothesis's seed (default: derandomized)"
    )
    parser.add_argument(
        "--transports",
        default=",".join(transport.value for transport in Transport),
        help="comma-separated, of: " + ", ".join(transport.value for transport in Transport),
    )
    parser.add_argument(
        "--known", action="store_true", help="first replay the crashes issue 11 reported"
    )
    parser.add_argument(
        "--no-minimize",
        dest="minimize",
        action="store_false",
        help="do not cut each crash's shortest session down to a minimal reproduction",
    )
    parser.add_argument(
        "--replay",
        metavar="SESSION",
        help="run one session, given as printed in a report, --sessions times (default once)",
    )
    parser.add_argument("--verbose", action="store_true", help="let the server's log through")
    arguments = parser.parse_args(argv)
    # A crashed worker leaves sockets to the garbage collector; that is counted, not news.
    warnings.simplefilter("ignore", ResourceWarning)
    if arguments.replay is not None:
        report = trio.run(_replay, arguments.replay, arguments.sessions or 1)
        return 0 if report.clean else 1
    arguments.sessions = 10_000 if arguments.sessions is None else arguments.sessions
    print(f"trio_bocaws at {_commit()}; {arguments.sessions} sessions", flush=True)
    report = trio.run(_main, arguments)
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
