"""typecheck/ under mypy --strict: positives are clean, each negative fails with its code.

The run is in its own mypy invocation, against the installed package (so
servekit.classic is seen through its stub).  For the negative files a second
pass strips the ignores and checks that every marked line -- and only those --
reports exactly the code its ignore names.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "mypy.ini")
IGNORE = re.compile(r"\s*# type: ignore\[([a-z-]+)\]")


def _mypy(*args: str) -> tuple[str, int]:
    out, err, status = api.run(["--config-file", CONFIG, "--no-incremental", *args])
    return out + err, status


def test_typecheck_tree_is_clean() -> None:
    """Every pass/ file type-checks; every fail/ ignore is used with its exact code."""
    out, status = _mypy(str(ROOT / "typecheck"))
    assert status == 0, out


@pytest.mark.parametrize("path", sorted((ROOT / "typecheck" / "fail").glob("check_*.py")), ids=lambda p: p.name)
def test_each_negative_line_fails_with_its_code(path: Path) -> None:
    expected: dict[int, str] = {}
    stripped = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = IGNORE.search(line)
        if match:
            expected[number] = match.group(1)
            line = line[: match.start()]
        stripped.append(line)
    assert expected, f"{path.name} has no negative case"
    tmp = Path(tempfile.mkdtemp(prefix="sk-typecheck-"))
    try:
        copy = tmp / path.name
        copy.write_text("\n".join(stripped) + "\n")
        out, _ = _mypy(str(copy))
    finally:
        shutil.rmtree(tmp)
    found: dict[int, set[str]] = {}
    for match in re.finditer(rf"{re.escape(path.name)}:(\d+): error: .*\[([a-z-]+)\]$", out, re.MULTILINE):
        found.setdefault(int(match.group(1)), set()).add(match.group(2))
    assert found == {line: {code} for line, code in expected.items()}, out
