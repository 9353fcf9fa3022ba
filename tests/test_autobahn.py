"""Protocol conformance: Autobahn|Testsuite's fuzzing client against an echo app on a real
hypercorn trio server (``reliability/autobahn/``).

This runs the quick subset (247 cases, without 9.*, 12.* and 13.*; about 15 s). The full
suite, about 20 minutes, is ``python reliability/autobahn/run.py --full`` (``nox -s
autobahn``). Autobahn|Testsuite is Python 2 code: it needs CPython 2.7, and the runner
builds a virtualenv for it on first use (under a minute) and reuses it afterwards.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .components import require

RUNNER = Path(__file__).resolve().parent.parent / "reliability" / "autobahn" / "run.py"
QUICK_CASES = 247
# Far above the quick subset's 15 s, for a loaded machine; the runner kills wstest then.
TIMEOUT = 240.0


def _load_runner() -> ModuleType:
    # reliability/ is a directory of scripts, not a package: load the runner from its path.
    spec = importlib.util.spec_from_file_location("trio_bocaws_autobahn_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_autobahn_quick_subset_has_no_failed_case(tmp_path: Path) -> None:
    runner = _load_runner()
    try:
        runner.ensure_venv(quiet=True)
    except runner.SetupError as exc:
        require(
            False,
            "Autobahn|Testsuite (CPython 2.7 and a virtualenv for it)",
            f"`pyenv install 2.7.18`, then `python reliability/autobahn/run.py --setup-only` "
            f"({exc})",
        )

    result = runner.run_suite(report_dir=tmp_path, timeout=TIMEOUT, progress=False)

    failed = [
        f"{case.case_id} ({case.behavior}, close {case.behavior_close})"
        for case in result.cases
        if case.failed
    ]
    assert not failed, (
        f"{len(failed)} Autobahn case(s) failed: {', '.join(failed)}\n{runner.report(result)}"
    )
    # A partial or empty report must not pass for a clean one.
    assert len(result.cases) == QUICK_CASES, runner.report(result)
    assert {case.group for case in result.cases} == {1, 2, 3, 4, 5, 6, 7, 10}
    # SIGTERM stops the server gracefully: a crash or a hang (killed) would show here.
    assert result.server_exit == 0, runner.report(result)
