"""``python -m bench.importcost``: what importing servekit costs a fresh interpreter, beside ``socketserver``.

Each figure is one fresh interpreter (``python -c``) timing one import
statement with :func:`time.perf_counter_ns` around it, so the start-up of
the interpreter itself is left out and ``-X importtime``'s own printing is
not counted.  The statements alternate, in reverse order every second round,
so a drift of the machine favours none; what is printed is the median of the
rounds with their spread, the ratio of medians to ``import socketserver``,
and the modules each statement adds to ``sys.modules`` beyond what
``socketserver`` adds.

servekit's ``.pyc`` files are written first (:func:`precompile`), as
``pip install`` does: the standard library comes precompiled, and this
machine's environment sets ``PYTHONDONTWRITEBYTECODE``, so without them every
import of servekit would measure the compiler.

``--top N`` lists, for each statement, the N modules whose own import time
(``-X importtime``'s "self", median over the rounds) is largest: what
dominates.  The benchmark's report (``python -m bench``) prints the same
import figures, from :func:`import_time`.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: What is compared, by label: an import statement each.  ``import servekit``
#: alone loads nothing (its names load on first use), so the composed API is
#: measured by importing names.
STATEMENTS: dict[str, str] = {
    "socketserver": "import socketserver",
    "servekit.classic": "import servekit.classic",
    "composed": "from servekit import server, tcp, threaded",
}

#: The baseline the ratios are taken against.
BASELINE = "socketserver"

#: One import in a fresh interpreter: prints the nanoseconds and the new modules as JSON.
_PROBE = r"""
import sys, time
before = set(sys.modules)
started = time.perf_counter_ns()
exec(sys.argv[1])
took = time.perf_counter_ns() - started
import json
print(json.dumps([took, sorted(set(sys.modules) - before)]))
"""

#: How long any one interpreter may take, in seconds.
TIMEOUT = 60.0


def precompile(where: str) -> None:
    """Write the .pyc files of servekit (*where* is its ``__init__.py``) and of the bench, as
    ``pip install`` does.  Without them (``PYTHONDONTWRITEBYTECODE``, a fresh checkout) every
    server process would compile servekit's sources at start-up -- slower to import and
    megabytes more memory, which a forking server then copies for every request -- while the
    standard library comes precompiled."""
    package = Path(where).parent
    for path in (package, REPO / "bench"):
        if path.is_dir():
            compileall.compile_dir(path, quiet=1)


def probe(statement: str, python: str = sys.executable) -> tuple[int, list[str]]:
    """Time *statement* in a fresh interpreter: (nanoseconds, the modules it added)."""
    out = subprocess.run(
        [python, "-c", _PROBE, statement], capture_output=True, text=True, check=True, cwd=REPO, timeout=TIMEOUT
    ).stdout
    took, added = json.loads(out)
    return int(took), list(added)


def import_time(statement: str, repeats: int) -> float | None:
    """Median seconds of *statement* in *repeats* fresh interpreters (one more run first, not
    counted), or ``None`` if it fails.  Run after :func:`precompile`."""
    try:
        samples = [probe(statement)[0] / 1e9 for _ in range(repeats + 1)][1:]
    except subprocess.SubprocessError:
        return None
    return statistics.median(samples) if samples else None


def self_times(statement: str, python: str = sys.executable) -> dict[str, int]:
    """``-X importtime``'s own time (µs) of each module *statement* imports."""
    err = subprocess.run(
        [python, "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True, timeout=TIMEOUT
    ).stderr
    times: dict[str, int] = {}
    for line in err.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            times[parts[2].strip()] = int(parts[0])
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.importcost", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="rounds; each statement once a round (default 20)")
    parser.add_argument("--top", type=int, default=0, help="list each statement's N slowest modules (own time)")
    parser.add_argument("--only", action="append", choices=sorted(STATEMENTS), help="only these (repeatable)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    spec = importlib.util.find_spec("servekit")
    if spec is None or spec.origin is None:
        parser.error("servekit is not importable here: install it (pip install -e .) or set PYTHONPATH=lib")
    precompile(spec.origin)
    labels = [label for label in STATEMENTS if not args.only or label in args.only or label == BASELINE]

    times: dict[str, list[int]] = {label: [] for label in labels}
    modules: dict[str, list[str]] = {}
    own: dict[str, dict[str, list[int]]] = {label: {} for label in labels}
    for round_ in range(args.runs):
        for label in labels if round_ % 2 == 0 else labels[::-1]:
            took, modules[label] = probe(STATEMENTS[label])
            times[label].append(took)
            if args.top:
                for module, micros in self_times(STATEMENTS[label]).items():
                    own[label].setdefault(module, []).append(micros)

    base = statistics.median(times[BASELINE])
    print(f"Python {sys.version.split()[0]}, servekit from {spec.origin}: {args.runs} rounds,"
          " one import in a fresh interpreter, median [min max]")
    for label in labels:
        median = statistics.median(times[label])
        spread = f"[{min(times[label]) / 1e6:.2f} {max(times[label]) / 1e6:.2f}]"
        print(f"  {STATEMENTS[label]:<44} {median / 1e6:6.2f} ms {spread:<13} {median / base:5.2f}x"
              f"  {len(modules[label])} modules")
    for label in labels:
        if label != BASELINE:
            extra = sorted(set(modules[label]) - set(modules[BASELINE]))
            print(f"  {label}: {len(extra)} modules beyond {BASELINE}'s: {' '.join(extra)}")
    if args.top:
        for label in labels:
            slowest = sorted(own[label].items(), key=lambda item: -statistics.median(item[1]))[: args.top]
            listed = ", ".join(f"{module} {statistics.median(micros) / 1000:.2f}" for module, micros in slowest)
            print(f"  {label}: slowest own import times (ms): {listed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
