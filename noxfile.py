"""Development sessions: ``nox -s tests lint typecheck`` (``nox -l`` lists them all)."""

from __future__ import annotations

import re
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
CONSTRAINTS = ("-c", "constraints.txt")
COVERAGE_GATE = "93"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite under coverage, with a branch-coverage gate."""
    session.install("-e", ".[test]", *CONSTRAINTS)
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine")
    session.run("coverage", "report", f"--fail-under={COVERAGE_GATE}")


# trio_bocaws.hypercorn_fixes.VERIFIED_VERSIONS (a test checks that they agree).
HYPERCORN_VERSIONS = ["0.17.3", "0.18.0"]


@nox.session
@nox.parametrize("hypercorn", HYPERCORN_VERSIONS)
def hypercorn_versions(session: nox.Session, hypercorn: str) -> None:
    """The suite on each hypercorn version the fixes are verified for, with CI's
    constraints for everything else."""
    session.install("-e", ".[test]", "-c", _constraints_with(session, hypercorn=hypercorn))
    session.run("pytest", *session.posargs)


def _constraints_with(session: nox.Session, **pins: str) -> str:
    """constraints.txt with some pins changed, as a file in the session's temporary
    directory (pip cannot take two constraints for one package)."""
    lines = []
    for line in Path("constraints.txt").read_text(encoding="utf-8").splitlines():
        name = re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].strip().lower()
        lines.append(f"{name}=={pins[name]}" if name in pins else line)
    path = Path(session.create_tmp()) / "constraints.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# The anycorn version the server-level tests were last run on (docs/deployment.md).
ANYCORN = "anycorn==0.20.1"
SERVER_TESTS = (
    "tests/test_websocket_server.py",
    "tests/test_core_honesty.py",
    "tests/test_app.py",
)


@nox.session
def anycorn(session: nox.Session) -> None:
    """The server-level WebSocket and App tests on anycorn (hypercorn's AnyIO fork, on Trio)
    instead of hypercorn: the core without trio_bocaws's hypercorn adapter.

    Tests marked ``needs_hypercorn_adapter`` must fail there (strict xfail); tests of
    hypercorn as it is are skipped. anycorn is installed here only, never a dependency.
    """
    session.install("-e", ".[test]", ANYCORN, *CONSTRAINTS)
    args = session.posargs or SERVER_TESTS
    session.run("pytest", *args, env={"TRIO_BOCAWS_TEST_SERVER": "anycorn"})


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation, built with warnings as errors (every reference must resolve)."""
    session.install("-r", "docs/requirements.txt", "-e", ".", *CONSTRAINTS)
    session.run(
        "sphinx-build", "-n", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def autobahn(session: nox.Session) -> None:
    """Autobahn|Testsuite's fuzzing client, all 517 cases (about 20 minutes; CPython 2.7).

    ``nox -s autobahn -- --cases '6.*'`` runs chosen cases; the report goes to
    test-artifacts/autobahn/. The quick subset runs in the test suite.
    """
    session.install("-e", ".", *CONSTRAINTS)
    session.run("python", "reliability/autobahn/run.py", "--full", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The protocol fuzzer's campaign: 10,000 random and malformed sessions (a few minutes).

    Prints sessions, worker crashes (by signature, each with a minimal reproduction),
    bystander failures and seconds; fails if the worker crashed or a bystander stopped
    echoing. Arguments after ``--`` go to ``python -m reliability.fuzz``
    (``nox -s fuzz -- --sessions 50000 --seed 7``).
    """
    session.install("-e", ".[test]", *CONSTRAINTS)
    session.run("python", "-m", "reliability.fuzz", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks: trio_bocaws against a bare ASGI app, Starlette and trio-websocket.

    Prints tables (and writes JSON under benchmarks/results/); never fails on a number.
    Arguments after ``--`` go to benchmarks/run.py (``nox -s bench -- --quick``). Needs
    Node.js and npm for the load generator.
    """
    session.run("npm", "ci", "--prefix", "benchmarks", external=True)
    session.install("-e", ".", "-r", "benchmarks/requirements.txt", *CONSTRAINTS)
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and flake8-async's cleanup checks, which ruff lacks."""
    session.install("ruff", "flake8", "flake8-async", *CONSTRAINTS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run(
        "flake8",
        "--select=ASYNC102,ASYNC120",
        "trio_bocaws",
        "trio_bocaws_pytest.py",
        "reliability/autobahn/run.py",
        "reliability/autobahn/echo_app.py",
        "reliability/fuzz",
        "tests",
        "examples",
        "docs/snippets",
        "noxfile.py",
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the examples."""
    session.install("-e", ".[test]", *CONSTRAINTS)
    session.install("mypy", "exceptiongroup", "nox")
    session.run("mypy")
    # The docs' snippets import the tutorial's `chat.app` as a reader would, from examples/.
    session.run("mypy", "docs/snippets", env={"MYPYPATH": "examples"})
