"""Lets an example run straight from a checkout of servekit.

Imported first by every example server: when ``servekit`` is not installed
(no ``pip install -e .``), this checkout's ``lib/`` goes on ``sys.path``.
servekit's own dependencies, attrs and typing-extensions, must be importable
either way.  An installed servekit is used as it is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("servekit") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
