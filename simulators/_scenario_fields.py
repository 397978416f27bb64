"""Typed, located reads from a parsed TOML table: the validator's vocabulary.

Theory of operation
-------------------
:class:`Context` knows the file's name, its :class:`~simulators._scenario_lines.LineIndex`
and the :class:`~simulators._scenario_model.ScenarioLimits`; :meth:`Context.fail` raises
:class:`~simulators._scenario_model.ScenarioError` at the line of a key path.
:class:`Table` wraps one parsed table with its path and the keys it allows: it refuses an
unknown key as soon as it is made (with a "did you mean" when a known key is close), and
its getters (:meth:`Table.name`, :meth:`Table.number`, :meth:`Table.duration`, ...) either
return a value of the promised type and range or fail at that key's line with a reason
that says what is expected. Durations are seconds (a TOML number) or a string of
``<number><unit>`` parts, units ``d h m s ms`` (``"90m"``, ``"1d12h"``, ``"1.5h"``), with a
leading ``-`` where a negative duration makes sense (a clock step).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NoReturn

from ._scenario_lines import LineIndex, Path
from ._scenario_model import ScenarioError, ScenarioLimits

__all__ = ["MISSING", "Context", "Table", "format_duration", "parse_duration"]

MISSING: Final = object()
"""Default of a getter whose key is required."""

_UNITS: Final = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)\s*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_duration(text: str) -> float | None:
    """Seconds in ``text`` like ``"1d12h"`` or ``"-5m"``; None if it is not a duration."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.removeprefix("-")
    total, pos = 0.0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            return None
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    return sign * total if body else None


def format_duration(seconds: float) -> str:
    """``seconds`` the way a scenario file writes it: ``"1d2h"``, ``"90s"``, ``"0s"``."""
    parts, rest = [], abs(seconds)
    for unit in ("d", "h", "m"):
        count = int(rest // _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
            rest -= count * _UNITS[unit]
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return ("-" if seconds < 0 else "") + "".join(parts)


def type_name(value: object) -> str:
    """How a TOML user calls the type of ``value``."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


@dataclass(frozen=True)
class Context:
    """The file being read: its name for messages, its key lines, and the caps."""

    source: str
    index: LineIndex
    limits: ScenarioLimits

    def fail(self, path: Path, reason: str) -> NoReturn:
        """Refuse the scenario at the line of ``path``."""
        raise ScenarioError(self.source, self.index.line_of(path), reason)

    def table(self, value: object, path: Path, allowed: Collection[str], what: str) -> Table:
        """``value`` as a :class:`Table` named ``what`` in messages, e.g. ``[[people]]``."""
        if not isinstance(value, dict):
            self.fail(path, f"{what} must be a table, not {type_name(value)}")
        return Table(self, value, path, frozenset(allowed), what)


class Table:
    """One parsed table: typed getters that fail at the offending key's line."""

    def __init__(
        self, ctx: Context, data: dict[str, object], path: Path, allowed: frozenset[str], what: str
    ) -> None:
        self.ctx, self.data, self.path, self.what = ctx, data, path, what
        for key in data:
            if key not in allowed:
                self._unknown(key, allowed)

    def _unknown(self, key: str, allowed: frozenset[str]) -> NoReturn:
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        known = ", ".join(sorted(allowed)) or "none"
        self.ctx.fail(
            (*self.path, key), f'unknown key "{key}" in {self.what}{hint} (known keys: {known})'
        )

    def fail(self, key: str | int, reason: str) -> NoReturn:
        self.ctx.fail((*self.path, key), reason)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: object, expected: str) -> object:
        """The value at ``key``; ``default`` if absent; fail if absent and required."""
        if key in self.data:
            return self.data[key]
        if default is MISSING:
            self.ctx.fail(self.path, f'{self.what} needs "{key}" ({expected})')
        return default

    def wrong(self, key: str, expected: str, value: object) -> NoReturn:
        if isinstance(value, str | int | float):
            got = f"{value!r} ({type_name(value)})"
        elif isinstance(value, datetime):
            got = "a date-time without an offset"
        elif isinstance(value, list | dict):
            got = type_name(value)
        else:
            got = "a date or a time of day"
        self.fail(key, f'"{key}" must be {expected}, got {got}')

    # --- scalars ------------------------------------------------------------------------

    def text(self, key: str, default: object = MISSING) -> str:
        """A string without control characters, at most ``max_name_length`` long."""
        value = self.raw(key, default, "a string")
        if not isinstance(value, str):
            self.wrong(key, "a string", value)
        if len(value) > self.ctx.limits.max_name_length or _CONTROL.search(value):
            limit = self.ctx.limits.max_name_length
            self.fail(
                key, f'"{key}" must be at most {limit} characters, without control characters'
            )
        return value

    def name(self, key: str = "name", default: object = MISSING) -> str:
        """A non-empty, trimmed name."""
        value = self.text(key, default)
        if not value.strip() or value != value.strip():
            self.fail(key, f'"{key}" must be a non-empty name without surrounding spaces')
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key, default, "true or false")
        if not isinstance(value, bool):
            self.wrong(key, "true or false", value)
        return value

    def integer(self, key: str, default: object, low: int, high: int) -> int:
        value = self.raw(key, default, f"an integer in [{low}, {high}]")
        if not isinstance(value, int) or isinstance(value, bool):
            self.wrong(key, f"an integer in [{low}, {high}]", value)
        if not low <= value <= high:
            self.fail(key, f'"{key}" must be in [{low}, {high}], got {value}')
        return value

    def number(self, key: str, default: object, low: float, high: float) -> float:
        """An integer or float in ``[low, high]``."""
        value = self.raw(key, default, f"a number in [{low:g}, {high:g}]")
        return self.check_number(key, value, low, high)

    def check_number(self, key: str | int, value: object, low: float, high: float) -> float:
        label = f'"{key}"' if isinstance(key, str) else f"{self.what} element {key + 1}"
        if not isinstance(value, int | float) or isinstance(value, bool):
            shown = type_name(value)
            self.fail(key, f"{label} must be a number in [{low:g}, {high:g}], not {shown}")
        if not (math.isfinite(value) and low <= value <= high):
            self.fail(key, f"{label} must be a number in [{low:g}, {high:g}], got {value!r}")
        return float(value)

    def duration(self, key: str, default: object, *, signed: bool = False) -> float:
        """Seconds: a number, or a string such as ``"90m"``; > 0 unless ``signed``."""
        expected = 'a duration such as 3600, "90m" or "1d12h"'
        value = self.raw(key, default, expected)
        if isinstance(value, str):
            seconds = parse_duration(value)
            if seconds is None:
                self.wrong(key, f"{expected} (units d, h, m, s, ms)", value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            self.wrong(key, expected, value)
        if not math.isfinite(seconds) or (not signed and seconds <= 0):
            self.fail(key, f'"{key}" must be a positive duration, got {value!r}')
        return seconds

    def time(self, key: str, duration_s: float) -> float:
        """A moment: a duration from the start, 0 allowed, before ``duration_s``."""
        value = self.raw(key, MISSING, 'a time from the start such as 0, "8h" or "1d2h"')
        at = self.duration(key, MISSING, signed=True)
        if at < 0:
            self.fail(key, f'"{key}" must not be negative, got {value!r}')
        if at >= duration_s:
            end = format_duration(duration_s)
            self.fail(key, f'"{key}" = {value!r} is not before the end of the scenario ({end})')
        return at

    def moment(self, key: str, default: datetime) -> datetime:
        value = self.raw(key, default, "a date-time")
        if not isinstance(value, datetime) or value.tzinfo is None:
            expected = "a date-time with an offset, e.g. 2026-01-05T00:00:00Z"
            self.wrong(key, expected, value)
        return value

    # --- compound -----------------------------------------------------------------------

    def names(self, key: str, default: object = MISSING) -> list[str]:
        """An array of names (no duplicates)."""
        value = self.raw(key, default, "an array of names")
        if not isinstance(value, list):
            self.wrong(key, "an array of names", value)
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.ctx.fail((*self.path, key, i), f'"{key}" must hold only non-empty names')
            if item in seen:
                self.ctx.fail((*self.path, key, i), f'"{key}" names "{item}" twice')
            seen.add(item)
        return list(value)

    def tables(self, key: str, allowed: Collection[str], what: str, limit: int) -> Iterator[Table]:
        """Each table of an array of tables (``[[key]]``); none if absent."""
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.wrong(key, f"an array of tables ({what})", value)
        if len(value) > limit:
            self.fail(key, f"at most {limit} {what} entries are allowed, got {len(value)}")
        for i, item in enumerate(value):
            yield self.ctx.table(item, (*self.path, key, i), allowed, what)

    def sub(self, key: str, allowed: Collection[str], what: str) -> Table:
        """The table at ``key`` (an empty one if absent)."""
        return self.ctx.table(self.data.get(key, {}), (*self.path, key), allowed, what)
