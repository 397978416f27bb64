"""``--json``: one canonical object, the same bytes for the same outcome, every key figure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from simulators.outcome import KEY_FIGURES, RunOutcome, Series
from simulators.report import report_json
from simulators.report._json import canonical
from simulators.report._stats import distribution, percentile
from tests.test_report_samples import HOSTILE, busy, every_sample, figures, quiet

SAMPLES = sorted(every_sample())


def loads(outcome: RunOutcome, **kwargs: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(report_json(outcome, **kwargs))
    return data


@pytest.mark.parametrize("name", SAMPLES)
def test_every_key_figure_is_in_the_json_by_its_name(name: str) -> None:
    data = loads(every_sample()[name])
    assert set(KEY_FIGURES) <= set(data["figures"])


@pytest.mark.parametrize("name", SAMPLES)
def test_the_json_is_one_canonical_ascii_line(name: str) -> None:
    text = report_json(every_sample()[name])
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.isascii()
    data = json.loads(text)
    again = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
    assert again == text


@pytest.mark.parametrize("name", SAMPLES)
def test_the_same_outcome_gives_the_same_bytes(name: str) -> None:
    assert report_json(every_sample()[name]) == report_json(every_sample()[name])


def test_figure_order_in_the_outcome_does_not_change_the_bytes() -> None:
    forward, backward = busy(), busy()
    backward.figures = dict(reversed(list(backward.figures.items())))
    backward.series.time_to_sync_s = dict(reversed(list(backward.series.time_to_sync_s.items())))
    assert report_json(forward) == report_json(backward)


def test_floats_are_rounded_to_six_decimals_and_signless_zero() -> None:
    outcome = quiet()
    outcome.figures.update(time_to_sync_s_p50_online=1 / 3, time_to_sync_s_p99_online=-1e-9)
    data = loads(outcome)
    assert data["figures"]["time_to_sync_s_p50_online"] == 0.333333
    assert '"time_to_sync_s_p99_online":0.0' in report_json(outcome)


def test_not_measured_and_non_finite_figures_are_null() -> None:
    outcome = quiet()
    del outcome.figures["access_events"]
    outcome.figures["denied_events"] = float("nan")
    outcome.figures["changes"] = float("-inf")
    data = loads(outcome)
    assert data["figures"]["access_events"] is None
    assert data["figures"]["denied_events"] is None
    assert data["figures"]["changes"] is None


def test_canonical_walks_nested_values() -> None:
    assert canonical({"a": [1.0000004, (float("nan"), -0.0)], 2: True}) == {
        "a": [1.0, [None, 0.0]],
        "2": True,
    }


def test_the_run_identity_and_the_mode_extras_are_kept() -> None:
    data = loads(busy())
    assert (data["scenario"], data["mode"], data["seed"], data["duration_s"]) == (
        "Busy campus",
        "fast",
        7,
        86400.0,
    )
    assert data["figures"]["wall_s"] == 12.5
    assert data["decision_count"] == 500
    assert "decisions" not in data


def test_decisions_only_when_asked() -> None:
    data = loads(busy(), decisions=True)
    assert len(data["decisions"]) == 500
    assert data["decisions"][0] == {
        "at_s": 0.0,
        "building": "Tower 0",
        "door": "Door 0",
        "granted": False,
        "person": "Person 0",
        "reason": "REVOKED",
        "via": "phone",
    }


def test_faults_keep_their_order_and_effects() -> None:
    data = loads(busy())
    assert [f["kind"] for f in data["faults"]] == ["broker_outage", "power_cut"]
    assert data["faults"][0] == {
        "at_s": 3600.0,
        "effect": "40 bundles held 7,200 s; nothing lost",
        "kind": "broker_outage",
        "target": "broker",
    }


def test_the_verdict_names_what_was_lost() -> None:
    lost = every_sample()["lossy"]
    data = loads(lost)
    assert data["ok"] is False
    assert data["verdict"].startswith("LOST: 2 door updates lost; 1 audit event lost")
    assert loads(quiet())["ok"] is True


def test_empty_series_give_zero_counts_and_nulls() -> None:
    series = loads(quiet())["series"]
    assert series["pending_doors"] == {
        "final": 0,
        "last_change_at_s": None,
        "peak": 0,
        "peak_at_s": None,
        "points": 0,
    }
    assert series["time_to_sync_s"]["online"]["count"] == 0
    assert series["time_to_sync_s"]["offline"]["p99"] is None
    assert series["doors"]["bundle_bytes_max_door"] is None
    assert series["audit_completeness"]["final_completeness"] is None


def test_series_summaries_hold_the_numbers() -> None:
    outcome = RunOutcome(
        "S",
        "live",
        2,
        100.0,
        figures(),
        series=Series(
            pending_doors=[(1.0, 2), (2.0, 5), (3.0, 5), (9.0, 0)],
            time_to_sync_s={"online": [float(v) for v in range(100, 0, -1)], "radio": [2.0]},
            audit_completeness=[(0.0, 0, 0), (5.0, 10, 4), (8.0, 10, 10)],
        ),
    )
    series = loads(outcome)["series"]
    assert series["pending_doors"] == {
        "final": 0,
        "last_change_at_s": 9.0,
        "peak": 5,
        "peak_at_s": 2.0,
        "points": 4,
    }
    online = series["time_to_sync_s"]["online"]
    assert (online["p50"], online["p90"], online["p99"], online["mean"]) == (50.0, 90.0, 99.0, 50.5)
    assert list(series["time_to_sync_s"]) == ["offline", "online", "radio"]
    assert series["audit_completeness"]["min_completeness"] == 0.4
    assert series["audit_completeness"]["final_completeness"] == 1.0


def test_hostile_names_survive_json_round_trip() -> None:
    data = loads(every_sample()["hostile"])
    assert data["scenario"] == HOSTILE
    assert data["faults"][0]["target"] == HOSTILE


def test_percentile_is_nearest_rank_and_skips_non_finite() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0
    stats = distribution([float("nan"), 2.0, float("inf"), 1.0])
    assert (stats.count, stats.min, stats.max) == (2, 1.0, 2.0)
