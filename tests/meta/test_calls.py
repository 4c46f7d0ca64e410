"""A classic request's route costs about what socketserver's does: calls into the library, counted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _calls(*only: str) -> dict[str, int]:
    args = [arg for name in only for arg in ("--only", name)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.calls", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    counts = {}
    for line in done.stdout.splitlines():
        name, count = line.rsplit(maxsplit=1)
        counts[name] = int(count)
    return counts


def test_threaded_classic_request_makes_at_most_two_more_calls_than_socketserver() -> None:
    """One warm StreamRequestHandler echo on ThreadingTCPServer, counted by a profile hook."""
    counts = _calls("ThreadingTCPServer", "ThreadingUDPServer")
    assert counts["classic.ThreadingTCPServer"] <= counts["socketserver.ThreadingTCPServer"] + 2, counts
    assert counts["classic.ThreadingUDPServer"] <= counts["socketserver.ThreadingUDPServer"] + 2, counts
    assert counts["socketserver.ThreadingTCPServer"] >= 10, counts  # the hook did count
