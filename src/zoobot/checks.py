"""Settings checks shared by every settings dataclass: one "expected X, got Y" phrasing.

Each settings dataclass calls these from ``__post_init__``, so a bad value is refused when the
settings are made (on the command line, before any work), never later.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable


class SettingsError(ValueError):
    """A setting is out of range, of the wrong type, or not one of the valid choices."""


def check_int(owner: str, name: str, value, minimum: int | None = None, optional: bool = False) -> None:
    """``value`` is an int (not a bool) of at least ``minimum``; None is allowed when optional."""
    if value is None and optional:
        return
    bound = "" if minimum is None else f" >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingsError(f"{owner}.{name}: expected an integer{bound}, got {value!r}")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{owner}.{name}: expected an integer{bound}, got {value!r}")


def check_number(
    owner: str, name: str, value, low: float | None = None, high: float | None = None, low_inclusive: bool = True
) -> None:
    """``value`` is a real number in [low, high] (or (low, high] when not ``low_inclusive``)."""
    opener = "[" if low_inclusive else "("
    expected = f"a number in {opener}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise SettingsError(f"{owner}.{name}: expected {expected}, got {value!r}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    if too_low or (high is not None and value > high):
        raise SettingsError(f"{owner}.{name}: expected {expected}, got {value!r}")


def check_choice(owner: str, name: str, value, choices: Iterable[str]) -> None:
    """``value`` is one of ``choices``; the error lists them and suggests the closest."""
    choices = list(choices)
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SettingsError(f"{owner}.{name}: expected one of {choices}, got {value!r}{hint}")
