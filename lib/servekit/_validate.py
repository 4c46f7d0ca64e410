"""Checks of option values whose messages name the option and show the bad value.

Each check is a plain function (``servekit.classic`` calls them as they
are); :func:`attrs_validator` makes an attrs validator of one.
"""

from __future__ import annotations

from collections.abc import Callable


def check_int(name: str, value: int, low: int, high: int | None = None) -> None:
    """Accept an ``int`` (not a ``bool``) with ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


def check_optional_int(name: str, value: int | None, low: int, high: int | None = None) -> None:
    """Accept ``None``, or an ``int`` (not a ``bool``) with ``low <= value <= high``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__} {value!r}")
    check_int(name, value, low, high)


def check_flag(name: str, value: bool) -> None:
    """Accept a ``bool`` only (a truthy string is a mistake, not a yes)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_text(name: str, value: str) -> None:
    """Accept a ``str``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")


def check_seconds(name: str, value: float | None, *, positive: bool = False) -> None:
    """Accept ``None`` or a finite, non-negative (or positive) number of seconds."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__} {value!r}")
    # value != value: NaN, without importing math (servekit.classic loads this module).
    if value != value or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}")


def int_in_range(name: str, low: int, high: int | None = None) -> Callable[[object, object, int], None]:
    """An attrs validator: :func:`check_int`."""
    return lambda _inst, _attr, value: check_int(name, value, low, high)


def optional_int_in_range(
    name: str, low: int, high: int | None = None
) -> Callable[[object, object, int | None], None]:
    """An attrs validator: :func:`check_optional_int`."""
    return lambda _inst, _attr, value: check_optional_int(name, value, low, high)


def flag(name: str) -> Callable[[object, object, bool], None]:
    """An attrs validator: :func:`check_flag`."""
    return lambda _inst, _attr, value: check_flag(name, value)


def text(name: str) -> Callable[[object, object, str], None]:
    """An attrs validator: :func:`check_text`."""
    return lambda _inst, _attr, value: check_text(name, value)


def seconds(name: str, *, positive: bool = False) -> Callable[[object, object, float | None], None]:
    """An attrs validator: :func:`check_seconds`."""
    return lambda _inst, _attr, value: check_seconds(name, value, positive=positive)
