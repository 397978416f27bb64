"""Scenario files for ``doorsim``: load, validate, check.

Theory of operation
-------------------
A scenario is a TOML file (the format is documented, key by key, in
``simulators/scenarios/README.md``, with one example file per feature next to it).
:func:`parse_scenario` turns its text into a frozen :class:`Scenario` in three steps:

1. ``tomllib`` parses the text; a syntax error becomes :class:`ScenarioError` at the line
   ``tomllib`` names in its message ("... (at line N, column M)").
2. :func:`~simulators._scenario_lines.index_lines` scans the accepted text once more and
   maps every key path (``("people", 3, "access", 0, "building")``) to its line, because
   ``tomllib`` keeps no positions.
3. :func:`~simulators._scenario_build.build_scenario` walks the parsed document, refusing
   unknown keys, wrong types, out-of-range numbers, duplicate names, dangling references
   and sizes above :class:`ScenarioLimits`, each at the line of the offending key.

Every refusal is one :class:`ScenarioError` whose text is ``FILE:LINE: reason``; no
other exception escapes for any input text. :func:`check_main` is ``doorsim check``:
one line per file, exit status 0 when every file is valid, else 1.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from ._scenario_build import DEFAULT_PORTFOLIO, DEFAULT_START, build_scenario
from ._scenario_fields import Context, format_duration, parse_duration
from ._scenario_lines import index_lines
from ._scenario_model import (
    Access,
    Activate,
    BleLinkLoss,
    BrokerOutage,
    Building,
    ClockDrift,
    CloudRestart,
    Deactivate,
    Door,
    Event,
    LostCard,
    Manager,
    Person,
    PersonEvent,
    PhoneOffline,
    Portfolio,
    PowerCut,
    Scenario,
    ScenarioError,
    ScenarioLimits,
    Traffic,
)

__all__ = [
    "DEFAULT_PORTFOLIO",
    "DEFAULT_START",
    "Access",
    "Activate",
    "BleLinkLoss",
    "BrokerOutage",
    "Building",
    "ClockDrift",
    "CloudRestart",
    "Deactivate",
    "Door",
    "Event",
    "LostCard",
    "Manager",
    "Person",
    "PersonEvent",
    "PhoneOffline",
    "Portfolio",
    "PowerCut",
    "Scenario",
    "ScenarioError",
    "ScenarioLimits",
    "Traffic",
    "check_main",
    "format_duration",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
]

_AT_LINE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END: Final = re.compile(r"\s*\(at end of document\)\s*$")


def parse_scenario(
    text: str, *, source: str = "<string>", limits: ScenarioLimits | None = None
) -> Scenario:
    """The scenario in ``text``; ``source`` names it in error messages.

    Raises :class:`ScenarioError` (``source:LINE: reason``) if the text is not a valid
    scenario.
    """
    limits = limits or ScenarioLimits()
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_file_bytes:
        raise ScenarioError(
            source, 1, f"the file is {size:,} bytes; at most {limits.max_file_bytes:,} are allowed"
        )
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _syntax_error(error, text, source) from None
    except RecursionError:
        raise ScenarioError(source, 1, "invalid TOML: nested too deeply") from None
    context = Context(source=source, index=index_lines(text), limits=limits)
    return build_scenario(document, context)


def _syntax_error(error: tomllib.TOMLDecodeError, text: str, source: str) -> ScenarioError:
    """``tomllib``'s message with its position turned into our ``FILE:LINE:`` form."""
    message = str(error)
    at_line = _AT_LINE.search(message)
    if at_line is not None:
        reason = f"{message[: at_line.start()]} (column {at_line[2]})"
        return ScenarioError(source, int(at_line[1]), f"invalid TOML: {reason}")
    at_end = _AT_END.search(message)
    reason = message[: at_end.start()] + " (at the end of the file)" if at_end else message
    return ScenarioError(source, text.count("\n") + 1, f"invalid TOML: {reason}")


def load_scenario(path: str | Path, *, limits: ScenarioLimits | None = None) -> Scenario:
    """The scenario in the file at ``path`` (UTF-8 TOML); :class:`ScenarioError` if not."""
    limits = limits or ScenarioLimits()
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = file.read(limits.max_file_bytes + 1)
    except OSError as error:
        raise ScenarioError(source, None, f"cannot read the file: {error.strerror}") from None
    if len(data) > limits.max_file_bytes:
        raise ScenarioError(
            source, 1, f"the file is larger than {limits.max_file_bytes:,} bytes, the most allowed"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ScenarioError(source, line, "the file is not UTF-8 text") from None
    return parse_scenario(text, source=source, limits=limits)


def check_main(
    paths: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """``doorsim check``: print ``FILE: ok (...)`` or ``FILE:LINE: reason`` per file.

    Valid files are reported on ``out`` (stdout), refused ones on ``err`` (stderr).
    Returns 0 if every file is a valid scenario, else 1 (also for no files at all).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if not paths:
        print("doorsim check: no scenario files given", file=err)
        return 1
    status = 0
    for path in paths:
        try:
            scenario = load_scenario(path)
        except ScenarioError as error:
            print(error, file=err)
            status = 1
            continue
        print(f"{path}: ok ({_summary(scenario)})", file=out)
    return status


def _summary(scenario: Scenario) -> str:
    doors, people, events = scenario.door_count, len(scenario.people), len(scenario.events)
    return (
        f"{doors} door{'s' * (doors != 1)}, {people} {'person' if people == 1 else 'people'}, "
        f"{events} event{'s' * (events != 1)}"
    )


if __name__ == "__main__":
    sys.exit(check_main(sys.argv[1:]))
