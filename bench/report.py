"""Turns the cells of one run into the printed report, the JSON file and the
optional PNG chart.

The ratios come first in spirit (they are what the figures are judged by):
each is a servekit (or peer) entry's requests/s over its standard-library
twin's (or over another entry it is compared with: the reactor's event
loops), both measured in this run, with each run's own ratio beside the mean
so the noise is visible.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable
from pathlib import Path

from bench.generator import LoadResult
from bench.harness import IMPORTS, Cell, Options, Results, connections_of
from bench.servers import ENTRIES, WORKLOADS, Entry, Workload, by_name, proto_of

__all__ = ("read_json", "render", "write_chart", "write_json")

#: A server past this share of the generator's ceiling may be measuring the
#: generator, not itself: the report says so.
CEILING_WARN = 0.7
#: CPU used by the rest of the machine, as a share of one core, past which a
#: cell is marked as disturbed.
OTHER_LOAD_WARN = 0.2
#: The groups whose figures the targets are about.
_JUDGED = ("servekit", "classic", "stdlib")
#: What the issue judges shutdown() by.
SHUTDOWN_TARGET_S = 0.005
#: The reactor's memory per idle connection, at most (its issue's target).
REACTOR_IDLE_KIB_TARGET = 2.0


def _disturbed(cell: Cell) -> bool:
    """Whether other processes used a noticeable share of the machine during
    the cell (on an idle machine the kernel's own work stays under ~10 %)."""
    return cell.server_cpu_wall_s > 0 and cell.other_cpu_s / cell.server_cpu_wall_s > OTHER_LOAD_WARN


def _ok(cells: Iterable[Cell]) -> list[Cell]:
    return [c for c in cells if c.error is None and c.load is not None and c.load.requests > 0]


def _median_rate(cells: list[Cell]) -> float:
    """Requests/s of a server over its runs: the median, as threads under the
    GIL make single runs bimodal (one convoy can halve a run)."""
    return statistics.median(c.rate for c in cells) if cells else 0.0


def _ms(us: float) -> str:
    ms = us / 1000.0
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        cells = [v.rjust(w) if k in right else v.ljust(w) for k, (v, w) in enumerate(zip(row, widths))]
        out.append("  " + "  ".join(cells).rstrip())
        if n == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out


def _describe_workload(workload: Workload, results: Results) -> str:
    o = results.options
    return {
        "conn": f"conn -- a new connection per request: connect, one {o.size}-byte line, read the echo, "
        f"close; {o.conn} clients at once",
        "keepalive": f"keep-alive -- {o.keepalive} open connections, each sending its next line when "
        "the echo of the last is back",
        "idle": f"idle -- {o.idle} idle connections held open (each did one round trip first) while "
        f"{o.active} active connections do line round trips",
        "udp": f"udp -- {o.udp} sockets, each sending its next datagram when the echo of the last is back",
        "blocking": f"blocking -- {o.blocking} open connections, each sending its next line when the echo of "
        f"the last is back; the handler blocks {o.work_ms:g} ms (time.sleep) before each echo",
    }[workload]


def _workload_table(results: Results, workload: Workload) -> list[str]:
    header = ["server", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "srv CPU", "gen CPU", "peak MiB", "notes"]
    rows = [header]
    for name in results.entries:
        entry = by_name(name)
        if workload not in entry.workloads:
            continue
        cells = sorted(results.cells_of(name, workload), key=lambda c: c.run)
        if not cells:
            continue
        ok = _ok(cells)
        notes: list[str] = []
        for c in cells:
            if c.error:
                notes.append(f"run {c.run} FAILED: {c.error[:80]}")
            if c.stop_error:
                notes.append(f"run {c.run} STOP FAILED: {c.stop_error}")
            notes.extend(f"run {c.run}: {n}" for n in c.notes)
            if _disturbed(c):
                notes.append(f"run {c.run}: other load {c.other_cpu_s / c.server_cpu_wall_s:.0%}")
        wind = [c.wind_down_s for c in ok if c.wind_down_s is not None]
        if wind and max(wind) >= 0.5:
            notes.append(f"wound down in {' '.join(f'{w:.1f}' for w in wind)} s")
        loads = [c.load for c in ok if c.load is not None]
        errs = {k: sum(getattr(c.load, k) for c in cells if c.load is not None)
                for k in ("refused", "reset", "timeout", "other")}  # fmt: skip
        err_text = " ".join(f"{k} {v}" for k, v in errs.items() if v) or "0"
        tracebacks = sum(c.tracebacks for c in cells)
        if tracebacks:
            notes.append(f"server logged {tracebacks} tracebacks")
        setup_failed = sum(c.load.setup_failed for c in cells if c.load is not None)
        if setup_failed:
            notes.append(f"{setup_failed} connections failed to open")
        held = connections_of(workload, results.options)
        if entry.capacity is not None and held > entry.capacity:
            notes.append(f"serves {entry.capacity} of the {held} connections at once")
        if workload == "idle":
            per = [p for p in (c.per_idle_kib for c in ok) if p is not None]
            opened = [c.load.idle_open for c in ok if c.load is not None]
            setup = [c.load.idle_setup_s for c in ok if c.load is not None and c.load.idle_setup_s is not None]
            if per:
                notes.append(f"{' '.join(f'{p:.1f}' for p in per)} KiB/idle conn")
            if opened and min(opened) < results.options.idle:
                notes.append(f"only {min(opened)} idle opened")
            if setup:
                notes.append(f"opened in {' '.join(f'{s:.1f}' for s in setup)} s")
            lost = sum(c.load.idle_lost for c in ok if c.load is not None)
            if lost:
                notes.append(f"{lost} idle lost")
        if any(c.worker_cpu_s for c in ok):
            notes.append("workers' CPU " + " ".join(
                "+".join(f"{w / c.server_cpu_wall_s:.0%}" for w in c.worker_cpu_s)
                for c in ok if c.worker_cpu_s and c.server_cpu_wall_s > 0))  # fmt: skip
        if workload != "conn" and any(len(c.worker_conns) > 1 for c in ok):
            notes.append("connections per worker " + " ".join("+".join(map(str, c.worker_conns)) for c in ok))
        if entry.forks:
            peak = max((c.tree_peak_kib for c in ok), default=0)
            procs = max((c.tree_peak_procs for c in ok), default=0)
            peak_text = f"{peak / 1024:.1f}*" if peak else "-"
            if procs > 1:
                notes.append(f"up to {procs} processes")
        else:
            peak = max((c.peak_kib for c in ok), default=0)
            peak_text = f"{peak / 1024:.1f}" if peak else "-"
        elapsed = [c.load.elapsed for c in ok if c.load is not None]
        srv_cpu = [c.server_cpu_s / c.server_cpu_wall_s * 100 for c in ok if c.server_cpu_wall_s > 0]
        gen_cpu = [c.load.cpu_s / e * 100 for c, e in zip(ok, elapsed) if c.load is not None and e > 0]
        rows.append([
            name,
            " ".join(f"{c.rate:,.0f}" for c in ok) or "-",
            " ".join(_ms(x.p50_us) for x in loads) or "-",
            " ".join(_ms(x.p99_us) for x in loads) or "-",
            " ".join(_ms(x.max_us) for x in loads) or "-",
            err_text,
            " ".join(f"{v:.0f}%" for v in srv_cpu) or "-",
            " ".join(f"{v:.0f}%" for v in gen_cpu) or "-",
            peak_text,
            "; ".join(notes),
        ])  # fmt: skip
    if len(rows) == 1:
        return []
    return [_describe_workload(workload, results), *_table(rows, {1, 2, 3, 4, 6, 7, 8}), ""]


def _ceiling(results: Results) -> list[str]:
    lines = [
        "Generator ceiling -- the load generator against its own trivial echo server (the 'ceiling' rows),",
        f"  in this run; generator: {results.generator}",
    ]
    worst = 0.0
    peers_near: list[str] = []
    measured = False
    for workload in results.options.workloads:
        ceiling = _median_rate(_ok(results.cells_of("ceiling", workload)))
        if not ceiling:  # (and the blocking workload has none: its servers wait, by design)
            continue
        measured = True
        # The servers judged (servekit, classic, stdlib) and the peers apart:
        # a fast peer near the ceiling makes only its own figure a lower bound.
        best: dict[bool, tuple[str, float]] = {True: ("-", 0.0), False: ("-", 0.0)}
        for name in results.entries:
            group = by_name(name).group
            if group == "ceiling":
                continue
            judged = group in _JUDGED
            rate = _median_rate(_ok(results.cells_of(name, workload)))
            if rate > best[judged][1]:
                best[judged] = (name, rate)
        name, rate = best[True]
        share = rate / ceiling
        worst = max(worst, share)
        text = f"  {workload:9} ceiling {ceiling:9,.0f} req/s; fastest judged server {name} {share:.0%} of it"
        peer, peer_rate = best[False]
        if peer_rate:
            text += f"; fastest peer {peer} {peer_rate / ceiling:.0%}"
            if peer_rate / ceiling > CEILING_WARN:
                peers_near.append(f"{peer} ({workload})")
        lines.append(text)
    if not measured:
        return []
    if results.options.smoke:
        lines.append("  (smoke run: cells too short to judge the ceiling)")
    elif worst > CEILING_WARN:
        lines.append(f"  WARNING: a judged server reached {worst:.0%} of the ceiling; the generator may limit it")
    else:
        lines.append(f"  ok: servekit and standard-library servers stay below {CEILING_WARN:.0%} of the ceiling")
    if peers_near and not results.options.smoke:
        lines.append(f"  note: near the ceiling, these peers' figures are lower bounds: {', '.join(peers_near)}")
    lines.append("  (the ceiling is the whole machine's: generator and server share its cores, and the kernel's")
    lines.append("  loopback TCP work is mostly charged to the sending side; see gen CPU in the tables)")
    return [*lines, ""]


def _ratio(results: Results, a: str, b: str, workload: Workload) -> tuple[float, list[float]] | None:
    ca, cb = _ok(results.cells_of(a, workload)), _ok(results.cells_of(b, workload))
    if not ca or not cb:
        return None
    by_run = {c.run: c.rate for c in cb}
    per_run = [c.rate / by_run[c.run] for c in ca if by_run.get(c.run)]
    return _median_rate(ca) / _median_rate(cb), per_run


def _p99_ratio(results: Results, a: str, b: str, workload: Workload) -> float | None:
    pa = [c.load.p99_us for c in _ok(results.cells_of(a, workload)) if c.load is not None]
    pb = [c.load.p99_us for c in _ok(results.cells_of(b, workload)) if c.load is not None]
    if not pa or not pb or not statistics.median(pb):
        return None
    return statistics.median(pa) / statistics.median(pb)


def ratio_rows(results: Results) -> list[tuple[Entry, Workload, str, tuple[float, list[float]], float | None]]:
    """(entry, workload, other, (ratio of medians, per-run ratios), p99 ratio) for every comparable
    pair: an entry and its twin, then the entries it is also compared with."""
    rows = []
    for name in results.entries:
        entry = by_name(name)
        for workload in results.options.workloads:
            if workload not in entry.workloads:
                continue
            twin = entry.twin.get(proto_of(workload))
            for other in (*([twin] if twin is not None else []), *entry.compare_with):
                if other not in results.entries or workload not in by_name(other).workloads:
                    continue
                r = _ratio(results, name, other, workload)
                if r is not None:
                    rows.append((entry, workload, other, r, _p99_ratio(results, name, other, workload)))
    return rows


def _judged_target(entry: Entry, other: str, workload: Workload) -> float | None:
    """The ratio *entry* must reach over *other*: its target over its twin, or
    its compare_target over the first entry it is compared with."""
    if entry.target is not None and other == entry.twin.get(proto_of(workload)):
        return entry.target
    if entry.compare_target is not None and entry.compare_with[:1] == (other,):
        return entry.compare_target
    return None


def _ratios(results: Results) -> list[str]:
    lines = [
        "Ratios -- requests/s of each server over its standard-library twin (and over the peers it is",
        "  compared with: the reactor's event loops, the pool alone, one pre-forked worker), same run",
        "  (median of the runs over median of the runs; each run's own ratio in brackets;",
        "  p99 ratio: median p99 over median p99, lower is better)",
    ]
    table = [["server", "vs", "workload", "ratio", "per run", "p99 ratio", "target"]]
    for entry, workload, twin, (mean, per_run), p99 in ratio_rows(results):
        target = ""
        judged = _judged_target(entry, twin, workload)
        if judged is not None:
            target = f">= {judged:.2f} {'met' if mean >= judged else 'MISSED'}"
        table.append([
            entry.name, twin, workload, f"{mean:.2f}x", "[" + " ".join(f"{r:.2f}" for r in per_run) + "]",
            f"{p99:.2f}x" if p99 is not None else "-", target,
        ])  # fmt: skip
    if len(table) == 1:
        return []
    return [*lines, *_table(table, {3, 5}), ""]


def _lifecycle_values(results: Results, name: str, key: str) -> list[float]:
    """The lifecycle figure *key* (a Cell attribute) of every cell of *name*."""
    values = [getattr(c, key) for c in results.cells if c.entry == name]
    return [v for v in values if isinstance(v, float)]


def _lifecycle(results: Results) -> list[str]:
    poll = results.options.poll_interval
    lines = [
        f"Lifecycle -- per server over all its cells: median [max]; serve_forever(poll_interval={poll:g})",
    ]
    table = [["server", "shutdown() until stopped", "shutdown() call", "close()", "start-up: bind to 1st answer"]]
    commands = []
    for name in results.entries:
        entry = by_name(name)
        if (entry.build is None and entry.command is None) or not any(c.entry == name for c in results.cells):
            continue  # (the ceiling; a twin or peer none of whose workloads ran)
        if entry.command is not None:
            commands.append(name)
        cols = [name]
        for key in ("shutdown_s", "shutdown_call_s", "close_s", "startup_s"):
            values = _lifecycle_values(results, name, key)
            cols.append(f"{_fmt_s(statistics.median(values))} [{_fmt_s(max(values))}]" if values else "-")
        table.append(cols)
    lines += _table(table, {1, 2, 3, 4})
    if commands:
        lines.append(f"  {', '.join(commands)}: command lines (python -m servekit); shutdown is from SIGTERM")
        lines.append("  until the process and its workers exited (status 0), start-up from the launch (interpreter")
        lines.append("  start-up and imports included) to the first answer")
    if results.imports:
        lines.append("")
        lines.append("Import time -- wall time of the statement in a fresh interpreter (.pyc files written first), "
                     f"median of {results.options.import_repeats}:")  # fmt: skip
        for module, seconds in results.imports.items():
            lines.append(f"  {IMPORTS.get(module, 'import ' + module):28} {_fmt_s(seconds)}")
    return [*lines, ""]


def headline(results: Results) -> list[str]:
    """The figures the issue's targets are about, in a few lines."""
    lines = ["Headline (ratios in this run):"]
    rows = ratio_rows(results)
    threaded = [(w, r[0]) for e, w, _, r, _ in rows if e.name == "servekit.threaded"]
    if threaded:
        lines.append("  servekit.threaded / stdlib Threading*Server: "
                     + ", ".join(f"{w} {r:.2f}x" for w, r in threaded))  # fmt: skip
    classic = [(e.name, w, r[0]) for e, w, _, r, _ in rows if e.group == "classic"]
    if classic:
        worst = min(classic, key=lambda t: t[2])
        lines.append(f"  servekit.classic / socketserver: lowest {worst[2]:.2f}x ({worst[0]}, {worst[1]}), "
                     f"all >= 0.95x: {'yes' if worst[2] >= 0.95 else 'NO'}")  # fmt: skip

    def med(name: str, key: str) -> float | None:
        values = _lifecycle_values(results, name, key)
        return statistics.median(values) if values else None

    def worst_of(group: str, key: str) -> tuple[str, float] | None:
        found = [(n, v) for n in results.entries if by_name(n).group == group
                 for v in _lifecycle_values(results, n, key)]
        return max(found, key=lambda t: t[1]) if found else None

    sk, std = med("servekit.threaded", "shutdown_s"), med("stdlib.ThreadingTCPServer", "shutdown_s")
    worst_sk = worst_of("servekit", "shutdown_s")
    if sk is not None and std is not None:
        text = f"  shutdown(): servekit.threaded {_fmt_s(sk)} vs ThreadingTCPServer {_fmt_s(std)} (median)"
        if worst_sk is not None:
            met = "met" if worst_sk[1] <= SHUTDOWN_TARGET_S else "MISSED"
            text += f"; slowest servekit {_fmt_s(worst_sk[1])} ({worst_sk[0]}), target <= 5 ms {met}"
        lines.append(text)
    sk, std = med("servekit.threaded", "startup_s"), med("stdlib.ThreadingTCPServer", "startup_s")
    if sk is not None and std is not None:
        lines.append(f"  start-up (bind to first answer): servekit.threaded {_fmt_s(sk)} "
                     f"vs ThreadingTCPServer {_fmt_s(std)}")  # fmt: skip
    lines += _compared_headline(results, rows)
    imp = results.imports
    if "servekit" in imp and "socketserver" in imp:
        text = f"  import: servekit {_fmt_s(imp['servekit'])}"
        if "servekit.classic" in imp:
            text += f", servekit.classic {_fmt_s(imp['servekit.classic'])}"
        lines.append(f"{text} vs socketserver {_fmt_s(imp['socketserver'])}")
    return [*lines, ""] if len(lines) > 1 else []


def _median_per_idle(results: Results, name: str) -> float | None:
    per = [p for p in (c.per_idle_kib for c in _ok(results.cells_of(name, "idle"))) if p is not None]
    return statistics.median(per) if per else None


def _compared_headline(
    results: Results, rows: list[tuple[Entry, Workload, str, tuple[float, list[float]], float | None]]
) -> list[str]:
    """The entries compared with peers (the reactor): their ratios over their
    twins and each peer (with the p99 ratio where latency is the point: next
    to idle connections, and under blocking work), and their memory per idle
    connection beside the peers'."""
    lines: list[str] = []
    for name in results.entries:
        entry = by_name(name)
        if not entry.compare_with:
            continue
        for other in dict.fromkeys((*entry.twin.values(), *entry.compare_with)):
            found = [(w, r, p99) for e, w, o, r, p99 in rows if e.name == name and o == other]
            if found:
                lines.append(f"  {name} / {other}: " + ", ".join(
                    f"{w} {r[0]:.2f}x" + (f" (p99 {p99:.2f}x)" if p99 is not None and w in ("idle", "blocking")
                                          else "") for w, r, p99 in found))  # fmt: skip
                judged = [(_judged_target(entry, other, w), r[0]) for w, r, _ in found]
                targets = {t for t, _ in judged if t is not None}
                if targets:
                    reached = all(r >= t for t, r in judged if t is not None)
                    lines[-1] += f"; target >= {min(targets):.2f} {'met' if reached else 'MISSED'}"
        mine = _median_per_idle(results, name)
        if mine is not None:
            idle = results.options.idle
            text = f"  {name} idle ({idle} connections): {mine:.2f} KiB each"
            if idle >= 1000:
                met = "met" if mine <= REACTOR_IDLE_KIB_TARGET else "MISSED"
                text += f" (<= {REACTOR_IDLE_KIB_TARGET:g} KiB {met})"
            peers = [(o, _median_per_idle(results, o)) for o in entry.compare_with]
            shown = [f"{o} {kib:.2f}" for o, kib in peers if kib is not None]
            if shown:
                text += "; " + ", ".join(shown)
            lines.append(text)
    return lines


def render(results: Results) -> str:
    m = results.machine
    o = results.options
    lines = [
        "servekit bench" + (" (SMOKE: figures meaningless)" if o.smoke else ""),
        f"  command:   {results.command}",
        f"  machine:   {m['cpus']} CPUs, {m['cpu model']}; {m['kernel']}; {m['python']}; {m['date']}",
        f"  servekit:  {results.servekit}",
        f"  generator: {results.generator}",
        f"  cells:     {o.seconds:g} s each, {o.runs} run(s); loopback {o.host}; total {results.wall_s:.0f} s",
        f"  CPUs:      {results.pinning}",
    ]
    disturbed = [c for c in results.cells if _disturbed(c)]
    lines.append(f"  noise:     {len(disturbed)} of {len(results.cells)} cells ran while other processes used "
                 f"more than {OTHER_LOAD_WARN:.0%} of a core (noted 'other load' in the tables)")  # fmt: skip
    for name, why in results.skipped.items():
        lines.append(f"  skipped:   {name}: {why}")
    for note in results.notes:
        lines.append(f"  note:      {note}")
    lines.append("")
    lines += headline(results)
    for workload in o.workloads:
        lines += _workload_table(results, workload)
    lines.append("  req/s and latencies: one figure per run.  errors: summed over runs.  CPU: % of one core")
    lines.append("  during the cell.  peak MiB: the server's VmHWM; * = PSS of the whole process tree.")
    lines.append("")
    lines += _ceiling(results)
    lines += _ratios(results)
    lines += _lifecycle(results)
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    data = dataclasses.asdict(results)
    for cell in data["cells"]:
        cell.pop("log_tail", None)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def read_json(path: Path) -> Results:
    """A run written by :func:`write_json`, to print or chart it again."""
    data = json.loads(path.read_text())
    opts = data.pop("options")
    opts["only"], opts["workloads"] = tuple(opts["only"]), tuple(opts["workloads"])
    cells = []
    for cell in data.pop("cells"):
        load = cell.pop("load")
        cells.append(Cell(**cell, load=LoadResult(**load) if load is not None else None))
    return Results(options=Options(**opts), cells=cells, **data)


_COLOURS = {"ceiling": "#999999", "servekit": "#1f77b4", "classic": "#6baed6", "stdlib": "#ff7f0e",
            "asyncio": "#2ca02c", "peer": "#9467bd"}  # fmt: skip


def write_chart(results: Results, path: Path) -> bool:
    """A PNG of requests/s per workload; ``False`` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads = [w for w in WORKLOADS if w in results.options.workloads]
    fig, axes = plt.subplots(len(workloads), 1, figsize=(9, 2.2 + 2.6 * len(workloads)), squeeze=False)
    for ax, workload in zip(axes[:, 0], workloads):
        names = [n for n in results.entries if workload in by_name(n).workloads]
        rates = [[c.rate for c in _ok(results.cells_of(n, workload))] for n in names]
        means = [statistics.median(r) if r else 0.0 for r in rates]
        ypos = list(range(len(names)))[::-1]
        ax.barh(ypos, means, color=[_COLOURS.get(by_name(n).group, "#333333") for n in names])
        for y, r in zip(ypos, rates):
            ax.plot(r, [y] * len(r), "k|", markersize=10)
        for y, value, run_rates in zip(ypos, means, rates):
            # Right of the bar and of every run's tick.
            ax.annotate(f"  {value:,.0f}", (max([value, *run_rates]), y), va="center", fontsize=7)
        ax.set_yticks(ypos, names, fontsize=8)
        ax.set_xlim(0, max([1.0, *means, *(r for run in rates for r in run)]) * 1.15)
        ax.set_title(workload, fontsize=10, loc="left")
        ax.set_xlabel("requests/s (bar: median of the runs, ticks: each run)", fontsize=8)
    m = results.machine
    fig.suptitle(f"servekit bench -- {m['cpus']} CPUs {m['cpu model']}, {m['python']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# Every registry entry has a colour in the chart.
assert {e.group for e in ENTRIES} <= set(_COLOURS)
