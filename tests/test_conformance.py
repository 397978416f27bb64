"""The conformance suite judged: the reference passes, every mutant fails its requirement.

Mutants (``tests/conformance_mutants.py``) each break one rule; the suite must fail
each exactly on the requirements its entry names (a few bugs break two rules by
nature, and the entry says why) and pass it on all the others. Also: the catalogue's
metadata, the runner's expected-failures logic and the JUnit report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import Result, Verdict, catalogue, run, select
from conformance.inprocess import InProcessLock
from conformance.report import summary, table, write_junit
from conformance.runner import ExpectedFailuresError, load_expected_failures
from tests.conformance_mutants import MUTANTS, Mutant


@pytest.fixture(scope="module")
def reference_results() -> list[Result]:
    return run(InProcessLock())


def test_reference_lock_passes_every_requirement(reference_results: list[Result]) -> None:
    verdicts = {r.requirement.name: (r.verdict, r.detail) for r in reference_results}
    assert {n: v for n, v in verdicts.items() if v[0] is not Verdict.PASS} == {}
    assert len(verdicts) == len(catalogue()) >= 40


def test_catalogue_metadata_is_complete() -> None:
    requirements = catalogue()
    names = [r.name for r in requirements]
    assert len(names) == len(set(names))
    for r in requirements:
        assert r.section.startswith("§"), r.name
        assert r.tags and r.title and not r.title.startswith(r.name), r.name


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_fails_exactly_its_requirements(mutant: Mutant) -> None:
    results = run(mutant.build())
    failed = {r.requirement.name for r in results if r.verdict is Verdict.FAIL}
    others = {
        r.requirement.name: r.verdict
        for r in results
        if r.verdict not in (Verdict.FAIL, Verdict.PASS)
    }
    assert others == {}
    assert failed == mutant.breaks, table(results)
    assert len(mutant.breaks) == 1 or mutant.why_more


def test_every_mutant_names_a_known_requirement() -> None:
    names = {r.name for r in catalogue()}
    for mutant in MUTANTS:
        assert mutant.breaks <= names, mutant.name


def test_expected_failures_turn_into_xfail_and_xpass() -> None:
    mutant = next(m for m in MUTANTS if m.name == "accepts_rollback")
    chosen = select(catalogue(), only=["rollback", "bundle_is_applied_and_receipted"])
    known = frozenset({"bundle_rollback_is_refused", "bundle_is_applied_and_receipted"})
    verdicts = {
        r.requirement.name: r.verdict for r in run(mutant.build(), chosen, expected_failures=known)
    }
    assert verdicts == {
        "bundle_rollback_is_refused": Verdict.XFAIL,
        "bundle_is_applied_and_receipted": Verdict.XPASS,
    }
    assert Verdict.XPASS.unexpected and not Verdict.XFAIL.unexpected


def test_select_by_tag_name_and_skip() -> None:
    requirements = catalogue()
    frame = select(requirements, only=["frame"])
    assert frame and all("frame" in r.tags for r in frame)
    assert [r.name for r in select(requirements, only=["bundle_rollback_is_refused"])] == [
        "bundle_rollback_is_refused"
    ]
    rest = select(requirements, skip=["frame", "power-cut"])
    assert not any({"frame", "power-cut"} & r.tags for r in rest)
    assert len(rest) + len(frame) <= len(requirements)


def test_expected_failures_file(tmp_path: Path) -> None:
    good = tmp_path / "known.txt"
    good.write_text("# our gaps\nbundle_rollback_is_refused  # fixed in 2.1\n\n")
    names = [r.name for r in catalogue()]
    assert load_expected_failures(good, names) == {"bundle_rollback_is_refused"}
    bad = tmp_path / "bad.txt"
    bad.write_text("no_such_requirement\n")
    with pytest.raises(ExpectedFailuresError, match="no_such_requirement"):
        load_expected_failures(bad, names)
    with pytest.raises(ExpectedFailuresError, match="cannot read"):
        load_expected_failures(tmp_path / "missing.txt", names)


def test_junit_of_a_failing_run_parses(tmp_path: Path) -> None:
    mutant = next(m for m in MUTANTS if m.name == "crc_blind")
    results = run(mutant.build(), select(catalogue(), only=["frame"]))
    path = tmp_path / "junit.xml"
    write_junit(results, path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert int(suite.get("tests", "0")) == len(results)
    assert suite.get("failures") == "1" and suite.get("errors") == "0"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["frame_bad_checksum_is_malformed"]
    assert "1 unexpected" in summary(results)
