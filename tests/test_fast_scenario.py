"""Fast mode runs scenario files (issue #6): the scenario's openings, its changes and each
fault kind, and fills the shared :class:`~simulators.outcome.RunOutcome`.

Each test writes a small scenario (one building, an online entrance and a BLE-only
basement, a few people) with the events it needs and runs it on the virtual clock with
the real lock, protocol and cloud cores inside. Assertions read the outcome and, where
a time matters, the run's tracked door updates. No sleeps, no wall clock.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from simulators.fast.report import Tracked, canonical_json
from simulators.fast.scenario_run import ScenarioRun, run_scenario
from simulators.outcome import KEY_FIGURES, RunOutcome, disagreements
from simulators.scenario import Scenario, load_scenario, parse_scenario
from simulators.traffic import openings

WORLD = """\
[scenario]
name = "test"
duration = "{duration}"
seed = {seed}

[[portfolios]]
name = "Harbor"

[[buildings]]
name = "Tower"

[[buildings.doors]]
name = "Entrance"
online = true

[[buildings.doors]]
name = "Basement"

[[managers]]
name = "Maya"
portfolios = ["Harbor"]

[[people]]
name = "Ana"
cards = ["card-1"]
phone = {ana_phone}
access = [{{ building = "Tower" }}]

[[people]]
name = "Ben"
cards = ["card-6"]
phone = false
access = [{{ building = "Tower" }}]

[traffic]
openings_per_person_per_day = {rate}
phone_share = {phone_share}
"""


def scenario(
    events: str = "",
    *,
    duration: str = "12h",
    seed: int = 1,
    rate: float = 24.0,
    phone_share: float = 0.5,
    ana_phone: bool = True,
) -> Scenario:
    text = WORLD.format(
        duration=duration,
        seed=seed,
        rate=rate,
        phone_share=phone_share,
        ana_phone=str(ana_phone).lower(),
    )
    return parse_scenario(text + events, source="test.toml")


def event(kind: str, at: str, **keys: object) -> str:
    lines = [f'[[events]]\nat = "{at}"\nkind = "{kind}"']
    for key, value in keys.items():
        shown = str(value).lower() if isinstance(value, bool) else f'"{value}"'
        lines.append(f"{key} = {shown}")
    return "\n".join(lines) + "\n\n"


def nothing_lost(outcome: RunOutcome) -> None:
    assert outcome.figures["lost_updates"] == 0
    assert outcome.figures["lost_audit_events"] == 0
    assert outcome.ok


def door_records(run: ScenarioRun, name: str) -> list[Tracked]:
    index = run.setup.door_at[("Tower", name)]
    return [r for r in run.tracker.records if r.door == index]


HOUR = 3_600.0
ROOT = Path(__file__).resolve().parent.parent


# --- the contract ---------------------------------------------------------------------------


def test_the_scenarios_openings_are_replayed_exactly_and_every_figure_is_filled() -> None:
    plan = scenario(event("deactivate", "6h", person="Ben", by="Maya"))
    outcome = run_scenario(plan)
    expected = [(o.at_s, o.person, o.building, o.door, o.via) for o in openings(plan)]
    got = [(d.at_s, d.person, d.building, d.door, d.via) for d in outcome.decisions]
    assert got == expected and len(got) > 10
    assert set(KEY_FIGURES) <= outcome.figures.keys()
    assert outcome.figures["access_events"] == len(expected)
    assert outcome.figures["changes"] == 1 and outcome.figures["door_updates"] == 2
    series = outcome.series
    assert series.pending_doors[:2] == [(0.0, 0), (6 * HOUR, 2)]
    assert series.pending_doors[-1][1] in (0, 1)  # the basement waits for a phone
    assert series.audit_completeness[-1][0] == 12 * HOUR
    assert {door.door for door in series.doors} == {"Entrance", "Basement"}
    assert series.time_to_sync_s["online"] and series.revocation_latency_s
    nothing_lost(outcome)


def test_the_same_scenario_gives_the_same_bytes() -> None:
    events = event("lost_card", "3h", person="Ana", by="Maya") + event(
        "broker_outage", "4h", duration="1h"
    )
    plan = scenario(events, seed=3)
    first, second = run_scenario(plan), run_scenario(plan)
    assert canonical_json(first.figures) == canonical_json(second.figures)
    assert first.decisions == second.decisions and first.faults == second.faults
    assert first.series == second.series
    assert disagreements(first, second) == []


_FAULTY = "simulators/scenarios/event_ble_link_loss.toml"
_REPORT = (
    "import sys; from simulators.scenario import load_scenario;"
    " from simulators.fast import run_scenario, canonical_json;"
    f" o = run_scenario(load_scenario({_FAULTY!r}));"
    " sys.stdout.buffer.write(canonical_json(o.figures) + repr(o.decisions).encode()"
    " + repr(o.faults).encode())"
)


def test_same_bytes_in_processes_with_different_hash_seeds() -> None:
    """Nothing depends on str hashing (set order): another process, same bytes."""
    outputs = [
        subprocess.run(
            [sys.executable, "-c", _REPORT],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            check=True,
            cwd=ROOT,
            timeout=300,
        ).stdout
        for hash_seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1] and b"GRANTED" in outputs[0]


def test_progress_reports_scenario_seconds_up_to_the_end() -> None:
    seen: list[float] = []
    run_scenario(scenario(duration="2h", rate=4.0), progress=seen.append)
    assert seen == sorted(seen) and seen[0] == 0.0 and seen[-1] == 2 * HOUR


def test_a_finished_run_can_be_dropped_from_another_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run hands its cloud connection back when it ends: SQLite refuses to close a
    connection from another thread, where the garbage collector may drop the run."""
    runs = [ScenarioRun(scenario(duration="1h", rate=4.0))]
    runs[0].run()

    def drop() -> None:
        runs.clear()
        gc.collect()

    dropper = threading.Thread(target=drop)
    with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"):
        dropper.start()
        dropper.join()
    assert not runs
    assert [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy")] == []


def test_a_run_never_reads_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    run = ScenarioRun(scenario(duration="2h"))

    def forbidden() -> float:
        raise AssertionError("fast mode read wall time")

    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, forbidden)
    run.clock.run_until(run.scenario.duration_s)
    monkeypatch.undo()
    assert run.outcome().figures["access_events"]


# --- decisions ------------------------------------------------------------------------------


def test_a_deactivated_card_is_refused_once_the_door_has_the_change() -> None:
    plan = scenario(event("deactivate", "4h", person="Ben", by="Maya"), phone_share=0.8)
    run = ScenarioRun(plan)
    outcome = run.run()
    (entrance,) = door_records(run, "Entrance")
    (basement,) = door_records(run, "Basement")
    assert entrance.applied is not None and entrance.applied < 4 * HOUR + 1
    for decision in (d for d in outcome.decisions if d.person == "Ben"):
        record = entrance if decision.door == "Entrance" else basement
        synced = record.applied is not None and decision.at_s > record.applied
        assert decision.reason == ("REVOKED" if synced else "GRANTED"), decision
    assert any(d.person == "Ben" and d.reason == "REVOKED" for d in outcome.decisions)
    nothing_lost(outcome)


TWO_PORTFOLIOS = """\
[scenario]
name = "two portfolios"
duration = "6h"
seed = 2

[[portfolios]]
name = "Harbor"

[[portfolios]]
name = "Hill"

[[buildings]]
name = "Tower"
portfolio = "Harbor"

[[buildings.doors]]
name = "Entrance"
online = true

[[buildings]]
name = "Hut"
portfolio = "Hill"

[[buildings.doors]]
name = "Gate"
online = true

[[managers]]
name = "Maya"
portfolios = ["Harbor"]

[[people]]
name = "Chloe"
phone = false
access = [{ building = "Tower" }, { building = "Hut" }]

[traffic]
openings_per_person_per_day = 48.0
"""


def test_a_manager_outside_the_portfolio_is_refused_and_the_person_self_serves() -> None:
    events = event("deactivate", "2h", person="Chloe", by="Maya") + event(
        "deactivate", "3h", person="Chloe"
    )
    outcome = run_scenario(parse_scenario(TWO_PORTFOLIOS + events, source="two.toml"))
    assert outcome.figures["refused_changes"] == 1 and outcome.figures["changes"] == 1
    ours = [d for d in outcome.decisions if d.person == "Chloe"]
    assert all(d.granted for d in ours if d.at_s < 3 * HOUR)
    assert all(d.reason == "REVOKED" for d in ours if d.at_s > 3 * HOUR + 1)
    assert any(d.at_s > 3 * HOUR + 1 for d in ours)
    nothing_lost(outcome)


# --- faults ---------------------------------------------------------------------------------


def test_broker_outage_online_doors_get_the_change_after_the_restart_not_before() -> None:
    events = event("broker_outage", "6h", duration="2h") + event(
        "deactivate", "7h", person="Ben", by="Maya"
    )
    run = ScenarioRun(scenario(events))
    outcome = run.run()
    (entrance,) = door_records(run, "Entrance")
    assert entrance.applied is not None and 8 * HOUR <= entrance.applied < 8 * HOUR + 5
    assert entrance.synced is not None and entrance.synced >= entrance.applied
    (fault,) = outcome.faults
    assert fault.kind == "broker_outage" and "1 frame for online doors waited" in fault.effect
    assert "0 online-door updates applied during the outage" in fault.effect
    assert fault.effect.endswith("nothing lost")
    nothing_lost(outcome)


@pytest.mark.parametrize("door", ["Basement", "Entrance"])
def test_power_cut_during_an_update_leaves_the_old_list_whole_and_the_lock_syncs(
    door: str,
) -> None:
    events = event("power_cut", "2h", building="Tower", door=door, during_update=True) + event(
        "deactivate", "3h", person="Ben", by="Maya"
    )
    events = events.replace('during_update = "true"', "during_update = true")
    run = ScenarioRun(scenario(events, rate=48.0, phone_share=0.9))
    outcome = run.run()
    (fault,) = outcome.faults
    assert "tore the flash write committing an update" in fault.effect
    assert "booted from flash on its old list v1 (whole" in fault.effect
    (record,) = door_records(run, door)
    assert record.synced is not None  # synced after the reboot
    simulated = run.doors[run.setup.door_at[("Tower", door)]]
    assert simulated.boots == 1 and run.held_version(simulated) == 2
    nothing_lost(outcome)


def test_a_lock_without_power_decides_nothing_and_keeps_its_audit() -> None:
    events = event("power_cut", "2h", building="Tower", door="Entrance", duration="2h")
    outcome = run_scenario(scenario(events, rate=48.0))
    during = [d for d in outcome.decisions if d.door == "Entrance" and 2 * HOUR < d.at_s < 4 * HOUR]
    after = [d for d in outcome.decisions if d.door == "Entrance" and d.at_s > 4 * HOUR + 1]
    assert during and all(d.reason == "NO_POWER" for d in during)
    assert after and all(d.granted for d in after)
    nothing_lost(outcome)


def test_phone_offline_uploads_queue_on_the_phone_and_drain_in_order_after() -> None:
    events = event("phone_offline", "1h", person="Ana", duration="6h")
    run = ScenarioRun(scenario(events, rate=48.0, phone_share=1.0, seed=4))
    outcome = run.run()
    (fault,) = outcome.faults
    log = run.faults.logs[0]
    assert log.count("queued") > 1 and log.count("sent") == log.count("queued")
    assert log.ended_at == 7 * HOUR and log.counts["last_sent_at"] >= 7 * HOUR
    assert "delivered in order after it came back" in fault.effect
    with run.setup.sessions() as session:
        from cloud.models import Door

        basement = session.get(Door, run.doors[run.setup.door_at[("Tower", "Basement")]].spec.id)
        assert basement is not None and basement.audit_gaps == 0  # in order: no gap ever seen
    nothing_lost(outcome)


def test_a_phone_offline_from_its_first_opening_has_no_credential_until_back() -> None:
    events = event("phone_offline", "0s", person="Ana", duration="3h")
    outcome = run_scenario(scenario(events, phone_share=1.0))
    ana = [d for d in outcome.decisions if d.person == "Ana"]
    assert {d.reason for d in ana if d.at_s < 3 * HOUR} == {"NO_MOBILE_CREDENTIAL"}
    assert {d.reason for d in ana if d.at_s > 3 * HOUR} == {"GRANTED"}
    nothing_lost(outcome)


def test_clock_drift_is_corrected_by_cloud_signed_time_syncs() -> None:
    events = event("clock_drift", "0s", building="Tower", door="Basement") + event(
        "clock_drift", "2h", building="Tower", door="Entrance"
    )
    events = events.replace('door = "Basement"', 'door = "Basement"\nppm = 2000.0', 1).replace(
        'door = "Entrance"', 'door = "Entrance"\nstep = "-10m"', 1
    )
    run = ScenarioRun(scenario(events, duration="1d", rate=24.0, phone_share=1.0))
    outcome = run.run()
    drift, step = outcome.faults
    assert run.faults.logs[0].count("syncs") >= 3
    assert "1 cloud-signed time sync corrected it by +600 s in all" in step.effect
    entrance = run.doors[run.setup.door_at[("Tower", "Entrance")]]
    assert entrance.lock is not None
    lock_time = entrance.lock.controller.lock_time(entrance.clock())
    assert abs(lock_time - (run.setup.wall_t0 + run.clock.now)) <= 2
    assert drift.effect.endswith("nothing lost")
    assert (outcome.figures["time_syncs"] or 0) >= 4
    nothing_lost(outcome)


def test_cloud_restart_publishes_the_unsent_outbox_from_the_database() -> None:
    events = event("deactivate", "3h", person="Ben", by="Maya") + event(
        "cloud_restart", "3h", duration="2m"
    )
    run = ScenarioRun(scenario(events))
    outcome = run.run()
    (entrance,) = door_records(run, "Entrance")
    assert entrance.applied is not None and 3 * HOUR + 120 <= entrance.applied < 3 * HOUR + 121
    (fault,) = outcome.faults
    assert "1 outbox frame unsent at the crash published" in fault.effect
    nothing_lost(outcome)


def test_cloud_restart_holds_changes_lock_messages_and_uploads_until_it_is_back() -> None:
    events = event("cloud_restart", "2h", duration="1h") + event(
        "deactivate", "2h30m", person="Ben", by="Maya"
    )
    run = ScenarioRun(scenario(events, rate=48.0, phone_share=1.0))
    outcome = run.run()
    (entrance,) = door_records(run, "Entrance")
    assert entrance.created == 3 * HOUR  # the change waited for the cloud
    assert run.faults.logs[0].count("held") >= 2
    nothing_lost(outcome)


def test_ble_link_loss_resumes_the_transfer_and_applies_nothing_twice() -> None:
    events = event("deactivate", "1h", person="Ben", by="Maya") + event(
        "ble_link_loss", "1h", building="Tower", door="Basement", duration="3h"
    )
    run = ScenarioRun(scenario(events, rate=48.0, phone_share=1.0, seed=5))
    outcome = run.run()
    log = run.faults.logs[0]
    assert log.count("bundle") >= 1 and log.count("resumed") >= 1
    (basement,) = door_records(run, "Basement")
    assert basement.applied is not None and basement.applied > 4 * HOUR
    (fault,) = outcome.faults
    assert "0 updates applied twice" in fault.effect and fault.effect.endswith("nothing lost")
    nothing_lost(outcome)


# --- the examples ---------------------------------------------------------------------------

EXAMPLES = sorted(
    path
    for path in (ROOT / "simulators" / "scenarios").glob("*.toml")
    # not: a week of 3,208 doors, 3 days of 60 people, the benchmarks' thousands of people
    if path.stem not in ("large_fast", "traffic") and not path.stem.startswith("bench_")
)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_every_small_example_runs_in_fast_mode_and_loses_nothing(path: Path) -> None:
    plan = load_scenario(path)
    outcome = run_scenario(plan)
    assert len(outcome.decisions) == len(openings(plan))
    assert len(outcome.faults) == sum(
        event.kind not in ("activate", "deactivate", "lost_card") for event in plan.events
    )
    assert all(fault.effect.endswith("; nothing lost") for fault in outcome.faults)
    nothing_lost(outcome)
