"""A campaign: many sessions drawn by Hypothesis against one :class:`FuzzTarget`.

Hypothesis runs in a worker thread (its ``@given`` is synchronous) and hands each session
to the Trio run through :func:`trio.from_thread.run`. The test body never fails: every
outcome is tallied, and for each kind of failure the shortest session seen is kept (then
cut down action by action, when asked) as its reproduction.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final

import attrs
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ._actions import Close, Connect, Preface, Session, Settle, StreamData, StreamRequest
from ._actions import Transport as T
from ._target import FuzzTarget, Outcome

__all__ = ["KNOWN_CRASHES", "Report", "campaign", "minimize"]

#: The three ways issue 11 crashed the server over HTTP/2, as sessions.
KNOWN_CRASHES: Final = (
    # A view closes first; the client answers the close frame, as RFC 6455 requires.
    Session(
        T.HTTP2,
        (Preface(), Connect(1, "/close-first"), Settle(), StreamData(1, Close(1000))),
        "settle",
    ),
    # A handshake refused with 403 (the Origin check), then one byte of DATA.
    Session(
        T.HTTP2,
        (Preface(), Connect(1, "/echo", "https://evil.example"), Settle(), StreamData(1, b"x")),
        "settle",
    ),
    # A plain HTTP/2 POST answered 404, whose client then sends a body; here under TLS.
    Session(
        T.HTTP2_TLS,
        (Preface(), StreamRequest(1, "POST", "/missing", False), Settle(), StreamData(1, b"b")),
        "settle",
    ),
)


@attrs.define
class Report:
    """The tally of a campaign."""

    sessions: int = 0
    by_transport: Counter[str] = attrs.Factory(Counter)
    crashes: Counter[str] = attrs.Factory(Counter)
    """Exceptions that escaped ``serve()``, by signature."""
    crashed_sessions: int = 0
    bystander_failures: int = 0
    bystander_failures_without_crash: int = 0
    fresh_failures: int = 0
    stuck: int = 0
    never_idle: int = 0
    views_left: int = 0
    """Sessions after which a view was still running, its client gone, the server idle: it
    waits on a timer (``close_timeout``, say). Reported, not counted in :attr:`clean`."""
    logged: Counter[str] = attrs.Factory(Counter)
    """Errors the server logged while it went on (contained), by signature."""
    shortest: dict[str, Session] = attrs.Factory(dict)
    """For each kind of failure, and each logged error, the shortest session seen."""
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """No crash, no bystander or fresh-connection failure, no stuck session."""
        return not (
            self.crashes
            or self.bystander_failures
            or self.fresh_failures
            or self.stuck
            or self.never_idle
        )

    def add(self, session: Session, outcome: Outcome) -> None:
        self.sessions += 1
        self.by_transport[session.transport.value] += 1
        kinds = list(outcome.crashes)
        if outcome.crashes:
            self.crashed_sessions += 1
        self.crashes.update(outcome.crashes)
        if outcome.bystander_failed:
            self.bystander_failures += 1
            if not outcome.crashes:
                self.bystander_failures_without_crash += 1
                kinds.append("bystander failed, no crash")
        if outcome.fresh_failed:
            self.fresh_failures += 1
            kinds.append("fresh connection failed")
        if outcome.stuck:
            self.stuck += 1
            kinds.append("session stuck")
        if outcome.never_idle:
            self.never_idle += 1
            kinds.append("server never idle")
        if outcome.views_left:
            self.views_left += 1
            kinds.append("views left running")
        self.logged.update(outcome.logged_errors)
        for kind in [*kinds, *(f"logged: {error}" for error in outcome.logged_errors)]:
            known = self.shortest.get(kind)
            if known is None or len(session.actions) < len(known.actions):
                self.shortest[kind] = session

    def summary(self) -> str:
        """The figures, one per line, and a reproduction for each kind of failure."""
        transports = ", ".join(
            f"{name} {count}" for name, count in sorted(self.by_transport.items())
        )
        lines = [
            f"sessions: {self.sessions} ({transports})",
            f"worker crashes: {sum(self.crashes.values())} (in {self.crashed_sessions} sessions)",
        ]
        for signature, count in self.crashes.most_common():
            lines.append(f"  {count:6}  {signature}")
            lines.append(f"          shortest: {self.shortest[signature]!r}")
        lines += [
            f"bystander failures: {self.bystander_failures} "
            f"({self.bystander_failures_without_crash} without a crash)",
            f"fresh-connection failures: {self.fresh_failures}",
            f"stuck sessions: {self.stuck}",
            f"server never idle after a session: {self.never_idle}",
            f"sessions after which a view still ran, waiting on a timer: {self.views_left}",
        ]
        for kind in (
            "bystander failed, no crash",
            "fresh connection failed",
            "session stuck",
            "server never idle",
            "views left running",
        ):
            if kind in self.shortest:
                lines.append(f"  {kind}, shortest: {self.shortest[kind]!r}")
        lines.append(f"errors logged, contained: {sum(self.logged.values())}")
        for signature, count in self.logged.most_common():
            lines.append(f"  {count:6}  {signature}")
            lines.append(f"          shortest: {self.shortest['logged: ' + signature]!r}")
        lines.append(f"seconds: {self.seconds:.1f}")
        return "\n".join(lines)


async def campaign(
    target: FuzzTarget,
    strategy: st.SearchStrategy[Session],
    *,
    sessions: int,
    seed: int | None = None,
    explicit: Sequence[Session] = (),
    progress: Callable[[Report], None] | None = None,
    progress_every: int = 1000,
) -> Report:
    """Run ``explicit`` sessions, then ``sessions`` drawn from ``strategy``.

    Args:
        seed: Hypothesis's seed; ``None`` derandomizes (the same sessions every run).
        progress: Called with the report every ``progress_every`` sessions.
    """
    report = Report()
    started = time.monotonic()

    async def one(session: Session) -> None:
        report.add(session, await target.run(session))
        report.seconds = time.monotonic() - started
        if progress is not None and report.sessions % progress_every == 0:
            progress(report)

    for session in explicit:
        await one(session)

    if sessions:
        await trio.to_thread.run_sync(partial(_drive, strategy, sessions, seed, one))
    report.seconds = time.monotonic() - started
    return report


def _drive(
    strategy: st.SearchStrategy[Session],
    sessions: int,
    seed: int | None,
    one: Callable[[Session], Awaitable[None]],
) -> None:
    """Hypothesis's side, in a worker thread: each session drawn goes to the Trio run."""

    @settings(
        max_examples=sessions,
        deadline=None,
        database=None,
        derandomize=seed is None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(strategy)
    def drive(session: Session) -> None:
        trio.from_thread.run(one, session)

    if seed is not None:
        drive = hypothesis_seed(seed)(drive)
    drive()


async def minimize(
    target: FuzzTarget, session: Session, still_fails: Callable[[Outcome], bool]
) -> Session:
    """``session`` with every action removed that ``still_fails`` does without: one pass
    over the actions, each tried once (a race may not reproduce every time)."""
    index = 0
    while index < len(session.actions):
        shorter = attrs.evolve(
            session, actions=session.actions[:index] + session.actions[index + 1 :]
        )
        if still_fails(await target.run(shorter)):
            session = shorter
        else:
            index += 1
    return session
