"""How a run is told: a plain-text table for people, JUnit XML for CI systems.

Theory of operation: both views are pure functions of the :class:`~conformance.runner.Result`
list. The table has one row per requirement (requirement, verdict, detail, section);
a detail too long for its column is cut in the row and printed whole under the table
for every unexpected verdict, so a failure is always explained in full. The JUnit file
has one ``testcase`` per requirement (``classname`` ``lock-conformance.<first tag>``),
the section and tags as properties; FAIL and XPASS are ``failure``, ERROR is ``error``,
SKIP and XFAIL are ``skipped`` with the reason, so CI dashboards count known gaps as
skipped rather than red.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .runner import Result, Verdict

__all__ = ["summary", "table", "write_junit"]

DETAIL_WIDTH = 64


def table(results: Sequence[Result]) -> str:
    """The results as an aligned text table, then the full text of unexpected verdicts."""
    rows = [("REQUIREMENT", "VERDICT", "DETAIL", "SECTION")]
    for r in results:
        detail = r.detail if len(r.detail) <= DETAIL_WIDTH else r.detail[: DETAIL_WIDTH - 1] + "…"
        rows.append((r.requirement.name, r.verdict.value, detail, r.requirement.section))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    unexpected = [r for r in results if r.verdict.unexpected]
    if unexpected:
        lines.append("")
        for r in unexpected:
            lines.append(f"{r.verdict.value} {r.requirement.name} ({r.requirement.section}):")
            lines.append(f"    {r.requirement.title}")
            lines.append(f"    {r.detail}")
    lines.append("")
    lines.append(summary(results))
    return "\n".join(lines)


def summary(results: Sequence[Result]) -> str:
    counts = Counter(r.verdict for r in results)
    parts = [f"{counts[v]} {v.value.lower()}" for v in Verdict if counts[v]]
    unexpected = sum(1 for r in results if r.verdict.unexpected)
    verdict = "conformant" if unexpected == 0 else f"{unexpected} unexpected"
    return f"{len(results)} requirements: {', '.join(parts) or 'none run'} — {verdict}"


def write_junit(results: Sequence[Result], path: Path) -> None:
    """Write JUnit XML (the common Jenkins / GitLab / GitHub dialect) to ``path``."""
    counts = Counter(r.verdict for r in results)
    suite = ET.Element(
        "testsuite",
        name="lock-conformance",
        tests=str(len(results)),
        failures=str(counts[Verdict.FAIL] + counts[Verdict.XPASS]),
        errors=str(counts[Verdict.ERROR]),
        skipped=str(counts[Verdict.SKIP] + counts[Verdict.XFAIL]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        _testcase(suite, r)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _testcase(suite: ET.Element, r: Result) -> None:
    req = r.requirement
    tag = min(req.tags) if req.tags else "requirement"
    case = ET.SubElement(
        suite,
        "testcase",
        classname=f"lock-conformance.{tag}",
        name=req.name,
        time=f"{r.seconds:.3f}",
    )
    properties = ET.SubElement(case, "properties")
    ET.SubElement(properties, "property", name="section", value=req.section)
    ET.SubElement(properties, "property", name="tags", value=",".join(sorted(req.tags)))
    ET.SubElement(properties, "property", name="verdict", value=r.verdict.value)
    element = {
        Verdict.FAIL: "failure",
        Verdict.XPASS: "failure",
        Verdict.ERROR: "error",
        Verdict.SKIP: "skipped",
        Verdict.XFAIL: "skipped",
    }.get(r.verdict)
    if element is not None:
        message = f"expected failure: {r.detail}" if r.verdict is Verdict.XFAIL else r.detail
        child = ET.SubElement(case, element, message=message)
        if element != "skipped":
            child.text = f"{req.title}\n{req.section}\n{r.detail}"
