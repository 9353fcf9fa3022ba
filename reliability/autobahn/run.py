"""Autobahn|Testsuite's fuzzing client against trio_bocaws on hypercorn's trio worker.

    python reliability/autobahn/run.py                 # quick: every case but 9.*, 12.*, 13.*
    python reliability/autobahn/run.py --full          # all 517 cases (about 20 minutes)
    python reliability/autobahn/run.py --cases '6.4.*' --cases 7.1.1   # chosen cases
    python reliability/autobahn/run.py --bare          # plain ASGI app, unpatched hypercorn
    python reliability/autobahn/run.py --setup-only    # only build the Python 2.7 virtualenv

Autobahn|Testsuite is Python 2 code: the first run builds a CPython 2.7 virtualenv with it
(``reliability/autobahn/.cache/``, or ``$TRIO_BOCAWS_AUTOBAHN_CACHE``; about a minute) and
later runs reuse it. CPython 2.7 is looked up as ``$TRIO_BOCAWS_PYTHON27``, then pyenv's
2.7.18, then ``python2.7`` on the PATH. The echo app (``echo_app.py``) runs under the
Python that runs this script, so trio_bocaws must be importable there.

The report (``index.html``, ``index.json``, one file per case), the spec and both logs go to
``--report-dir`` (default ``test-artifacts/autobahn``). The table printed at the end counts
each case group's outcomes. Exit status: 0 when no case failed, 1 when one did, 2 when the
suite could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent.parent
REQUIREMENTS: Final = HERE / "requirements-py27.txt"
ECHO_APP: Final = HERE / "echo_app.py"
DEFAULT_REPORT_DIR: Final = ROOT / "test-artifacts" / "autobahn"

CACHE_VARIABLE: Final = "TRIO_BOCAWS_AUTOBAHN_CACHE"
PYTHON27_VARIABLE: Final = "TRIO_BOCAWS_PYTHON27"
# The last virtualenv release that still creates Python 2 environments.
VIRTUALENV: Final = "virtualenv==20.21.1"

AGENT: Final = "trio_bocaws"
# 9.* (messages up to 16 MiB) and 12.*/13.* (permessage-deflate) take about 19 of the full
# run's 20 minutes; the quick subset leaves them to --full.
QUICK_EXCLUDED: Final = ("9.*", "12.*", "13.*")
OUTCOMES: Final = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")

SERVER_START_TIMEOUT: Final = 30.0
# A server still shutting down after this long is stuck (its graceful_timeout is 5 s).
SERVER_STOP_TIMEOUT: Final = 15.0
QUICK_TIMEOUT: Final = 600.0
FULL_TIMEOUT: Final = 3 * 3600.0
PROGRESS_EVERY: Final = 60.0
# The slowest case (12.2.15) took 32 s on a loaded machine; ten times that is a hang.
CASE_STALL_TIMEOUT: Final = 300.0

_LISTENING = re.compile(r"^listening on (wss?://\S+)$")
_RUNNING_CASE = re.compile(r"Running test case ID (\S+)")


class SetupError(Exception):
    """The suite cannot run here; the message is one line that says why."""


class CaseHung(Exception):
    """A case made no progress: wstest waits without a time limit in some cases (9.*, for
    one), so a connection the server neither answers nor closes stops the whole run."""

    def __init__(self, case_id: str, seconds: float) -> None:
        super().__init__(
            f"case {case_id} hung: no progress for {seconds:.0f} s (wstest was stopped, so "
            "there is no report; rerun it alone with --cases and look at server.log)"
        )
        self.case_id = case_id


# -- The Python 2.7 virtualenv ---------------------------------------------------------------


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_VARIABLE) or HERE / ".cache")


def _python27_candidates() -> Iterator[Path]:
    explicit = os.environ.get(PYTHON27_VARIABLE)
    if explicit:
        yield Path(explicit)
        return  # an explicit choice that does not work must not be silently replaced
    pyenv_root = os.environ.get("PYENV_ROOT")
    if not pyenv_root and shutil.which("pyenv"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            pyenv_root = subprocess.run(
                ["pyenv", "root"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
    for root in (pyenv_root, str(Path.home() / ".pyenv")):
        if root:
            yield Path(root) / "versions" / "2.7.18" / "bin" / "python2.7"
    found = shutil.which("python2.7")
    if found:
        yield Path(found)


def _is_cpython27(python: Path) -> bool:
    check = (
        "import platform, sys; v = sys.version_info; "
        "sys.stdout.write('%s %d.%d' % (platform.python_implementation(), v[0], v[1]))"
    )
    try:
        result = subprocess.run(
            [str(python), "-c", check], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and result.stdout == "CPython 2.7"


def find_python27() -> Path:
    """The CPython 2.7 interpreter to build the virtualenv with.

    Raises:
        SetupError: None was found.
    """
    for candidate in _python27_candidates():
        if candidate.is_file() and _is_cpython27(candidate):
            return candidate
    if os.environ.get(PYTHON27_VARIABLE):
        raise SetupError(
            f"{PYTHON27_VARIABLE}={os.environ[PYTHON27_VARIABLE]} is not a CPython 2.7 interpreter"
        )
    raise SetupError(
        "CPython 2.7 not found (Autobahn|Testsuite needs it): `pyenv install 2.7.18`, or "
        f"set {PYTHON27_VARIABLE} to a python2.7"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two runs at once (a test and a manual run, say) must not build one virtualenv twice.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(args: Sequence[str | Path], log: Path, what: str, **options: object) -> None:
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(map(str, args))}\n")
        sink.flush()
        result = subprocess.run(
            [str(arg) for arg in args],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=False,
            **options,  # type: ignore[call-overload]
        )
    if result.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        last = lines[-1].strip() if lines else ""
        raise SetupError(f"{what} failed (exit {result.returncode}): {last} [log: {log}]")


def _stamp_of(python27: Path) -> str:
    # Rebuilt when the pins or the interpreter change; not when only the clock moves on.
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    return f"{digest} {VIRTUALENV} {python27.resolve()}\n"


def _bin(venv: Path, name: str) -> Path:
    return venv / "bin" / name


def venv_is_ready(cache_dir: Path, python27: Path) -> bool:
    venv = cache_dir / "py27"
    stamp = venv / "trio-bocaws-stamp"
    try:
        if stamp.read_text() != _stamp_of(python27):
            return False
    except OSError:
        return False
    return _bin(venv, "wstest").is_file() and _bin(venv, "python").exists()


def ensure_venv(cache_dir: Path | None = None, *, quiet: bool = False) -> Path:
    """Build the Python 2.7 virtualenv with Autobahn|Testsuite unless it is ready.

    Returns:
        The path of its ``wstest``.

    Raises:
        SetupError: No CPython 2.7, or an install step failed (the log says more).
    """
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    python27 = find_python27()
    venv = cache_dir / "py27"
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir / ".gitignore"
    if not ignore.exists():
        # As .pytest_cache does: git, and tools that follow .gitignore (ruff, a formatter
        # run over the whole tree), leave the virtualenv's third-party code alone.
        ignore.write_text("# made by reliability/autobahn/run.py\n*\n")
    with _locked(cache_dir / "setup.lock"):
        if venv_is_ready(cache_dir, python27):
            return _bin(venv, "wstest")
        if not quiet:
            print(f"building the Python 2.7 virtualenv in {venv} (once) ...", flush=True)
        log = cache_dir / "setup.log"
        log.write_text("")
        if venv.exists():
            shutil.rmtree(venv)
        tool = cache_dir / VIRTUALENV.replace("==", "-")
        if not (tool / "virtualenv").is_dir():
            if tool.exists():
                shutil.rmtree(tool)
            # Kept apart from the running environment, whose own virtualenv (if any) is too
            # new to create a Python 2 environment.
            _run_logged(
                [sys.executable, "-m", "pip", "install", "--quiet", "--target", tool, VIRTUALENV],
                log,
                f"installing {VIRTUALENV}",
            )
        environment = {**os.environ, "PYTHONPATH": str(tool)}
        environment.pop("VIRTUAL_ENV", None)
        _run_logged(
            [
                sys.executable,
                "-m",
                "virtualenv",
                "--no-periodic-update",
                "--app-data",
                cache_dir / "virtualenv-app-data",
                "--python",
                python27,
                venv,
            ],
            log,
            "creating the Python 2.7 virtualenv",
            env=environment,
        )
        _run_logged(
            [
                _bin(venv, "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--requirement",
                REQUIREMENTS,
            ],
            log,
            "installing Autobahn|Testsuite",
        )
        _run_logged(
            [_bin(venv, "python"), "-c", "import autobahntestsuite.wstest"],
            log,
            "importing Autobahn|Testsuite",
        )
        (venv / "trio-bocaws-stamp").write_text(_stamp_of(python27))
    return _bin(venv, "wstest")


# -- The echo server -------------------------------------------------------------------------


class EchoServer:
    """``echo_app.py`` in a child process, on a free port of 127.0.0.1."""

    def __init__(self, log: Path, *, bare: bool = False) -> None:
        self.log = log
        self.bare = bare
        self.url = ""
        self.returncode: int | None = None
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> EchoServer:
        with self.log.open("w") as sink:
            self._process = process = subprocess.Popen(
                [
                    sys.executable,
                    str(ECHO_APP),
                    "--stop-on-eof",
                    *(["--bare"] if self.bare else []),
                ],
                # The server also stops when this pipe closes: if this runner is killed, the
                # server does not outlive it.
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=sink,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            self.url = self._read_url(process)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_url(self, process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if selector.select(left):
                    line = process.stdout.readline()
                    if not line:
                        break  # it exited
                    found = _LISTENING.match(line.strip())
                    if found:
                        return found.group(1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)  # after its stdout closed, the exit is a moment away
        why = (
            f"exited with {process.returncode}"
            if process.returncode is not None
            else (f"did not report its address within {SERVER_START_TIMEOUT:.0f} s")
        )
        raise SetupError(f"the echo server {why}: {_last_line(self.log)} [log: {self.log}]")

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM (and stdin closed), then wait; SIGKILL if it does not stop in time."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGTERM)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            process.communicate(timeout=SERVER_STOP_TIMEOUT)
        if process.poll() is None:
            process.kill()
            process.communicate()
        self.returncode = process.returncode
        self._process = None

    def errors(self) -> list[str]:
        """Each record the server logged at ERROR or above, in one line: its message, and
        the exception of its traceback if it has one."""
        records: list[list[str]] = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("["):
                records.append([line])
            elif records and line.strip():
                records[-1].append(line)
        return [
            record[0] if len(record) == 1 else f"{record[0]} -> {record[-1].strip()}"
            for record in records
            if "[ERROR]" in record[0] or "[CRITICAL]" in record[0]
        ]


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1].strip() if lines else "(no output)"


# -- Running and reading the suite -----------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    """One case of the report (``index.json``)."""

    case_id: str
    behavior: str
    behavior_close: str
    remote_close_code: int | None
    duration_ms: int
    report_file: str

    @property
    def group(self) -> int:
        return int(self.case_id.split(".", 1)[0])

    @property
    def failed(self) -> bool:
        # A case whose messages were right but whose closing handshake was wrong failed too.
        return self.behavior == "FAILED" or self.behavior_close == "FAILED"


@dataclass(frozen=True)
class RunResult:
    selection: str
    cases: list[CaseResult]
    seconds: float
    report_dir: Path
    server_errors: list[str]
    server_exit: int | None

    @property
    def failed(self) -> list[CaseResult]:
        return [case for case in self.cases if case.failed]


def case_sort_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def load_results(report_dir: Path, agent: str = AGENT) -> list[CaseResult]:
    """The cases of Autobahn's ``index.json``, in case order.

    Raises:
        SetupError: There is no report, or it has no results for ``agent``.
    """
    index = report_dir / "index.json"
    try:
        report = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise SetupError(f"no readable Autobahn report at {index}: {exc}") from exc
    if agent not in report:
        raise SetupError(f"the Autobahn report at {index} has no results for {agent!r}")
    cases = [
        CaseResult(
            case_id=case_id,
            behavior=entry["behavior"],
            behavior_close=entry["behaviorClose"],
            remote_close_code=entry.get("remoteCloseCode"),
            duration_ms=entry.get("duration", 0),
            report_file=entry.get("reportfile", ""),
        )
        for case_id, entry in report[agent].items()
    ]
    return sorted(cases, key=lambda case: case_sort_key(case.case_id))


def _clear_old_report(report_dir: Path) -> None:
    # Only what wstest writes: a stale index.json must never pass for this run's.
    for name in ("index.json", "index.html"):
        with contextlib.suppress(FileNotFoundError):
            (report_dir / name).unlink()
    for path in report_dir.glob(f"{AGENT.lower()}_case_*"):
        path.unlink()


def _write_spec(report_dir: Path, url: str, cases: Sequence[str], excluded: Sequence[str]) -> Path:
    spec = {
        "outdir": str(report_dir),
        "servers": [{"agent": AGENT, "url": url}],
        "cases": list(cases),
        "exclude-cases": list(excluded),
        "exclude-agent-cases": {},
    }
    path = report_dir / "spec.json"
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def _wait_for_wstest(
    process: subprocess.Popen[bytes], log: Path, timeout: float, progress: bool
) -> None:
    started = last_change = time.monotonic()
    next_report = started + PROGRESS_EVERY
    current = None
    while True:
        try:
            process.wait(timeout=min(5.0, max(0.0, started + timeout - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        else:
            return
        now = time.monotonic()
        running = _RUNNING_CASE.findall(log.read_text(errors="replace"))
        case = running[-1] if running else None
        if case != current:
            current, last_change = case, now
        elif case is not None and now - last_change >= CASE_STALL_TIMEOUT:
            process.kill()
            process.wait()
            raise CaseHung(case, now - last_change)
        if now - started >= timeout:
            process.kill()
            process.wait()
            raise SetupError(f"wstest did not finish within {timeout:.0f} s [log: {log}]")
        if progress and now >= next_report:
            print(f"  ... {now - started:.0f} s, at case {case or '-'}", flush=True)
            next_report = now + PROGRESS_EVERY


def run_suite(
    *,
    full: bool = False,
    cases: Sequence[str] = (),
    report_dir: Path = DEFAULT_REPORT_DIR,
    cache_dir: Path | None = None,
    timeout: float | None = None,
    progress: bool = True,
    bare: bool = False,
) -> RunResult:
    """Build (or reuse) the virtualenv, serve the echo app, run the fuzzing client on it.

    ``cases`` (patterns such as ``"6.4.*"``) overrides the choice between the quick subset
    and ``full``. ``bare`` runs the plain ASGI baseline instead of the trio_bocaws app.

    Raises:
        SetupError: The suite could not run (no CPython 2.7, a failed install, a server
            that did not start, no report).
        CaseHung: A case made no progress for ``CASE_STALL_TIMEOUT`` seconds.
    """
    wstest = ensure_venv(cache_dir, quiet=not progress)
    chosen: list[str] = list(cases) or ["*"]
    excluded: list[str] = []
    if cases:
        selection = f"cases {' '.join(cases)}"
    elif full:
        selection = "full suite"
    else:
        selection = f"quick subset (without {', '.join(QUICK_EXCLUDED)})"
        excluded = list(QUICK_EXCLUDED)
    if bare:
        selection += ", bare ASGI baseline"
    if timeout is None:
        timeout = FULL_TIMEOUT if full else QUICK_TIMEOUT
    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    _clear_old_report(report_dir)
    wstest_log = report_dir / "wstest.log"
    started = time.monotonic()
    with EchoServer(report_dir / "server.log", bare=bare) as server:
        spec = _write_spec(report_dir, server.url, chosen, excluded)
        if progress:
            print(f"Autobahn|Testsuite, {selection}, against {server.url}", flush=True)
        with wstest_log.open("wb") as sink:
            process = subprocess.Popen(
                [str(wstest), "-m", "fuzzingclient", "-s", str(spec)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=report_dir,
            )
            try:
                _wait_for_wstest(process, wstest_log, timeout, progress)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        seconds = time.monotonic() - started
    if process.returncode != 0:
        raise SetupError(
            f"wstest exited with {process.returncode}: {_last_line(wstest_log)} "
            f"[log: {wstest_log}]"
        )
    return RunResult(
        selection=selection,
        cases=load_results(report_dir),
        seconds=seconds,
        report_dir=report_dir,
        server_errors=server.errors(),
        server_exit=server.returncode,
    )


# -- Reporting -------------------------------------------------------------------------------


def group_counts(cases: Sequence[CaseResult]) -> dict[int, Counter[str]]:
    """Per case group (1 for 1.*, ...), how many cases had each outcome."""
    groups: dict[int, Counter[str]] = {}
    for case in cases:
        groups.setdefault(case.group, Counter())[case.behavior] += 1
    return dict(sorted(groups.items()))


def format_table(cases: Sequence[CaseResult]) -> str:
    headings = ("group", "cases", *OUTCOMES)
    rows = []
    total: Counter[str] = Counter()
    for group, counts in group_counts(cases).items():
        total.update(counts)
        rows.append((f"{group}.*", str(sum(counts.values())), *(str(counts[o]) for o in OUTCOMES)))
    rows.append(("total", str(sum(total.values())), *(str(total[o]) for o in OUTCOMES)))
    widths = [max(len(row[i]) for row in (headings, *rows)) for i in range(len(headings))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in (headings, *rows)
    ]
    return "\n".join(lines)


def _case_summary(case: CaseResult, report_dir: Path) -> str:
    text = f"{case.case_id}: {case.behavior}, close {case.behavior_close}"
    if case.remote_close_code is not None:
        text += f", server closed with {case.remote_close_code}"
    with contextlib.suppress(OSError, ValueError, KeyError):
        detail = json.loads((report_dir / case.report_file).read_text())
        text += f"\n      {detail['description']}\n      -> {detail['result']}"
        if case.behavior_close != "OK":
            text += f"\n      -> {detail['resultClose']}"
    return text


def report(result: RunResult) -> str:
    lines = [
        f"Autobahn|Testsuite fuzzingclient, {result.selection}: {len(result.cases)} cases "
        f"in {result.seconds:.1f} s",
        format_table(result.cases),
    ]
    unusual = [
        case
        for case in result.cases
        if case.behavior not in ("OK", "INFORMATIONAL") or case.behavior_close != "OK"
    ]
    if unusual:
        lines.append("Cases not plainly OK:")
        lines.extend(f"  {_case_summary(case, result.report_dir)}" for case in unusual)
    if result.server_errors:
        lines.append(f"The server logged {len(result.server_errors)} error line(s):")
        lines.extend(f"  {line}" for line in result.server_errors[:20])
    if result.server_exit not in (0, None):
        lines.append(f"The server exited with {result.server_exit}.")
    lines.append(f"Report: {result.report_dir / 'index.html'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run Autobahn|Testsuite's fuzzing client against trio_bocaws."
    )
    parser.add_argument("--full", action="store_true", help="all 517 cases (about 20 minutes)")
    parser.add_argument(
        "--cases",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only these cases (e.g. '6.4.*'); repeat for several",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=DEFAULT_REPORT_DIR,
        help=f"where the report goes (default {DEFAULT_REPORT_DIR.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"where the Python 2.7 virtualenv lives (default ${CACHE_VARIABLE} or "
        f"{HERE.relative_to(ROOT) / '.cache'})",
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="serve a plain ASGI echo on unpatched hypercorn instead (the baseline)",
    )
    parser.add_argument("--timeout", type=float, help="seconds before wstest is stopped")
    parser.add_argument(
        "--setup-only", action="store_true", help="build the virtualenv, run nothing"
    )
    arguments = parser.parse_args(argv)
    try:
        if arguments.setup_only:
            print(ensure_venv(arguments.cache_dir))
            return 0
        result = run_suite(
            full=arguments.full,
            cases=arguments.cases,
            report_dir=arguments.report_dir,
            cache_dir=arguments.cache_dir,
            timeout=arguments.timeout,
            bare=arguments.bare,
        )
    except SetupError as exc:
        print(f"autobahn: error: {exc}", file=sys.stderr)
        return 2
    except CaseHung as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(report(result))
    if result.failed:
        print(f"FAILED: {' '.join(case.case_id for case in result.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
