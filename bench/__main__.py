"""``python -m bench``: run the benchmark, print the report.

See bench/README.md for the set-up and for what each figure means.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.harness import Options, run_all
from bench.report import read_json, render, write_chart, write_json
from bench.servers import ENTRIES, WORKLOADS, Workload

DEFAULT_CHART = Path(__file__).resolve().parent / "results.png"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse(argv: list[str]) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per cell (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="runs of every cell (default 3)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI check: 0.2 s cells, 1 run, few connections, 0.05 s poll interval")
    parser.add_argument("--idle", type=int, default=None,
                        help="idle connections (default 1000; 10000 raises the fd limit to the hard limit)")
    parser.add_argument("--only", action="append", default=[], metavar="SUBSTRING",
                        help="only servers whose name contains it (repeatable; the ceiling and the "
                        "twins of the chosen servers always run)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--generator", choices=("auto", "c", "python"), default="auto",
                        help="load generator: the C one (needs cc), the Python fallback, or auto")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place server and generator (default: one core each)")
    parser.add_argument("--sources", type=int, default=16, metavar="N",
                        help="spread the generator's TCP connections over 127.0.0.1..127.0.0.N "
                        "(default 16; 1: only 127.0.0.1, which caps conn near 14,000/s)")
    parser.add_argument("--keepalive", type=int, default=None, metavar="N",
                        help="connections of the keep-alive workload (default 16)")
    parser.add_argument("--blocking", type=int, default=None, metavar="N",
                        help="connections of the blocking workload (default 32)")
    parser.add_argument("--work-ms", type=float, default=None, metavar="MS",
                        help="blocking work per line of the blocking workload, in ms (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--chart", type=Path, metavar="FILE",
                        help=f"PNG chart (needs matplotlib: pip install -e '.[plot]'); default {DEFAULT_CHART.name} "
                        "in bench/ for full runs, none for smoke runs")
    parser.add_argument("--no-chart", action="store_true", help="write no chart")
    parser.add_argument("--list", action="store_true", help="list the servers and exit")
    parser.add_argument("--replay", type=Path, metavar="FILE",
                        help="print (and chart) the figures of a --json file again; runs nothing")
    args = parser.parse_args(argv)  # fmt: skip

    workloads: list[Workload] = []
    for name in args.workloads.split(","):
        match = [w for w in WORKLOADS if w == name.strip()]
        if not match:
            parser.error(f"unknown workload {name!r}")
        workloads.extend(match)
    if args.smoke:
        opts = Options(seconds=0.2, runs=1, idle=20 if args.idle is None else args.idle, active=2,
                       keepalive=4, conn=2, udp=2, blocking=4, poll_interval=0.05, import_repeats=1,
                       smoke=True)  # fmt: skip
        if "--seconds" in argv:
            opts = Options(**{**opts.__dict__, "seconds": args.seconds})
    else:
        opts = Options(seconds=args.seconds, runs=args.runs, idle=1000 if args.idle is None else args.idle)
    if args.seconds <= 0 or args.runs < 1 or opts.idle < 0:
        parser.error("--seconds and --runs must be positive, --idle not negative")
    if args.keepalive is not None:
        if args.keepalive < 1:
            parser.error(f"--keepalive must be at least 1, got {args.keepalive}")
        opts = Options(**{**opts.__dict__, "keepalive": args.keepalive})
    if args.blocking is not None:
        if args.blocking < 1:
            parser.error(f"--blocking must be at least 1, got {args.blocking}")
        opts = Options(**{**opts.__dict__, "blocking": args.blocking})
    if args.work_ms is not None:
        if not 0 <= args.work_ms <= 1000:
            parser.error(f"--work-ms must be between 0 and 1000, got {args.work_ms}")
        opts = Options(**{**opts.__dict__, "work_ms": args.work_ms})
    opts = Options(**{**opts.__dict__, "only": tuple(args.only), "workloads": tuple(workloads),
                      "generator": args.generator, "pin": not args.no_pin,
                      "sources": max(1, min(254, args.sources))})  # fmt: skip
    return opts, args


def main(argv: list[str]) -> int:
    opts, args = parse(argv)
    if args.list:
        for entry in ENTRIES:
            print(f"{entry.name:28} {entry.group:9} {','.join(entry.workloads):28} requires {entry.requires}")
        return 0
    if args.replay is not None:
        results = read_json(args.replay)
    else:
        results = run_all(opts, shlex.join(["python", "-m", "bench", *argv]), _log)
    print(render(results), flush=True)
    if args.json is not None:
        write_json(results, args.json)
        _log(f"wrote {args.json}")
    chart = args.chart if args.chart is not None else (None if opts.smoke else DEFAULT_CHART)
    if chart is not None and not args.no_chart:
        if write_chart(results, chart):
            _log(f"wrote {chart}")
        else:
            _log("no chart: matplotlib is not installed (pip install -e '.[plot]')")
    failed = [c for c in results.cells if c.error is not None or c.stop_error is not None]
    if failed:
        _log(f"{len(failed)} cell(s) failed: " + ", ".join(f"{c.entry} {c.workload} run {c.run}" for c in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
