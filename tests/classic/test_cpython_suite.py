"""CPython's own test_socketserver, run on the standard library and on servekit.classic.

Each run is a subprocess of the running interpreter (``_cpython_runner.py``);
the servekit run installs ``servekit.classic`` as ``sys.modules["socketserver"]``
before anything imports ``socketserver``.  The counts of both runs are printed
(``pytest -s`` or ``-rP`` shows them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RUNNER = Path(__file__).with_name("_cpython_runner.py")

#: The whole suite takes a few seconds; the bound only stops a hang.
SUITE_TIMEOUT = 300.0


def _run(which: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(RUNNER), which],
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT:")]
    assert lines, f"the {which} run printed no result (exit {proc.returncode}):\n{proc.stderr[-5000:]}"
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT:"))
    report["stderr"] = proc.stderr
    return report


def _counts(report: dict[str, Any]) -> str:
    return (
        f"{report['which']:8} on Python {report['python']}: run {report['run']}, passed {len(report['passed'])}, "
        f"skipped {len(report['skipped'])}, failed {len(report['failures'])}, errors {len(report['errors'])}"
    )


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    stdlib = _run("stdlib")
    servekit = _run("servekit")
    print()
    print("CPython test_socketserver:", _counts(stdlib))
    print("CPython test_socketserver:", _counts(servekit))
    return {"stdlib": stdlib, "servekit": servekit}


def test_substitution_really_happened(runs: dict[str, dict[str, Any]]) -> None:
    report = runs["servekit"]
    assert report["module_name"] == "servekit.classic"
    assert report["suite_module_socketserver"] == "servekit.classic"
    assert report["tcpserver_module"] == "servekit.classic"
    assert Path(report["module_file"]).name == "classic.py"
    # ...and the baseline ran on the real thing.
    assert runs["stdlib"]["module_name"] == "socketserver"
    assert runs["stdlib"]["tcpserver_module"] == "socketserver"


def test_servekit_run_is_clean(runs: dict[str, dict[str, Any]]) -> None:
    report = runs["servekit"]
    assert report["run"] > 20
    assert not report["failures"] and not report["errors"], report["stderr"][-20000:]
    assert not report["unexpected_successes"]


def test_everything_passing_on_stdlib_passes_on_servekit(runs: dict[str, dict[str, Any]]) -> None:
    exceptions: dict[str, str] = runs["servekit"]["exceptions"]
    stdlib_passed = set(runs["stdlib"]["passed"])
    servekit_passed = set(runs["servekit"]["passed"])
    missing = stdlib_passed - servekit_passed - set(exceptions)
    assert not missing, f"pass on the standard library but not on servekit: {sorted(missing)}"
    # A deliberate exception is skipped with its reason, not silently lost.
    for test_id, reason in exceptions.items():
        assert reason
        if test_id in stdlib_passed:
            assert test_id in runs["servekit"]["skipped"]
    # Nothing else is skipped that the standard library runs.
    extra_skips = set(runs["servekit"]["skipped"]) - set(runs["stdlib"]["skipped"]) - set(exceptions)
    assert not extra_skips
