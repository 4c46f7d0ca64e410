"""attrs validators whose messages name the option and show the bad value."""

from __future__ import annotations

import math
from collections.abc import Callable


def int_in_range(name: str, low: int, high: int | None = None) -> Callable[[object, object, int], None]:
    """Accept an ``int`` (not a ``bool``) with ``low <= value <= high``."""

    def check(_inst: object, _attr: object, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"{name} must be {bounds}, got {value!r}")

    return check


def flag(name: str) -> Callable[[object, object, bool], None]:
    """Accept a ``bool`` only (a truthy string is a mistake, not a yes)."""

    def check(_inst: object, _attr: object, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")

    return check


def text(name: str) -> Callable[[object, object, str], None]:
    """Accept a ``str``."""

    def check(_inst: object, _attr: object, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")

    return check


def seconds(name: str, *, positive: bool = False) -> Callable[[object, object, float | None], None]:
    """Accept ``None`` or a finite, non-negative (or positive) number of seconds."""

    def check(_inst: object, _attr: object, value: float | None) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__} {value!r}")
        if math.isnan(value) or value < 0 or (positive and value == 0):
            raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}")

    return check
