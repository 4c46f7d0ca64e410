"""Run the interpreter's own ``test.test_socketserver`` on the stdlib or on servekit.classic.

Usage: ``python _cpython_runner.py stdlib|servekit``.  With ``servekit``,
``servekit.classic`` is installed as ``sys.modules["socketserver"]`` before
anything imports ``socketserver``.  The last line of stdout is ``RESULT:``
followed by JSON: the counts, the id of every test by outcome, and the
evidence of which module the suite really ran against.
"""

from __future__ import annotations

import json
import sys
import unittest
from types import TracebackType
from typing import TypeAlias

_ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

#: Tests of the suite that cannot pass on a stand-in, with the reason.
EXCEPTIONS: dict[str, str] = {
    "test.test_socketserver.MiscTestCase.test_all": (
        "it lists the names whose __module__ is 'socketserver'; servekit.classic's classes say "
        "'servekit.classic', so the expected list is empty by construction.  The same property, "
        "with servekit.classic's name, is checked by tests/classic/test_parity.py::test_all_lists_public_classes"
    ),
}


class _Result(unittest.TextTestResult):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.passed: list[str] = []

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self.passed.append(test.id())


def _skip_exceptions(suite: unittest.TestSuite | unittest.TestCase) -> None:
    if isinstance(suite, unittest.TestSuite):
        for test in suite:
            _skip_exceptions(test)
        return
    reason = EXCEPTIONS.get(suite.id())
    if reason is not None:
        method = getattr(suite, suite._testMethodName)
        setattr(suite, suite._testMethodName, unittest.skip(f"servekit: {reason}")(method))


def main(which: str) -> int:
    if which not in ("stdlib", "servekit"):
        raise SystemExit(f"usage: {sys.argv[0]} stdlib|servekit")
    if which == "servekit":
        if "socketserver" in sys.modules:
            raise SystemExit("socketserver was imported before the substitution")
        import servekit.classic

        sys.modules["socketserver"] = servekit.classic
    import importlib
    import socketserver

    suite_module = importlib.import_module("test.test_socketserver")

    suite = unittest.defaultTestLoader.loadTestsFromModule(suite_module)
    if which == "servekit":
        _skip_exceptions(suite)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=_Result)
    result = runner.run(suite)
    assert isinstance(result, _Result)
    report = {
        "which": which,
        "python": sys.version.split()[0],
        "module_name": socketserver.__name__,
        "module_file": socketserver.__file__,
        "tcpserver_module": socketserver.TCPServer.__module__,
        "suite_module_socketserver": suite_module.socketserver.__name__,
        "exceptions": EXCEPTIONS if which == "servekit" else {},
        "run": result.testsRun,
        "passed": sorted(result.passed),
        "failures": sorted(test.id() for test, _ in result.failures),
        "errors": sorted(test.id() for test, _ in result.errors),
        "skipped": sorted(test.id() for test, _ in result.skipped),
        "expected_failures": sorted(test.id() for test, _ in result.expectedFailures),
        "unexpected_successes": sorted(test.id() for test in result.unexpectedSuccesses),
    }
    sys.stdout.flush()
    print("RESULT:" + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
