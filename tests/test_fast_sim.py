"""The fast simulator: determinism, sync paths, revocation, nothing lost, no wall time.

Small buildings over a simulated hour, the real lock, protocol and cloud cores inside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from cloud.models import Door
from protocol import Reason
from simulators.fast import BuildingConfig, FastWorld, MqttModel, ScriptedChange, run_fast
from simulators.fast.clock import Process, Scheduler, SchedulingError

ROOT = Path(__file__).resolve().parent.parent

CHANGES = (
    ScriptedChange(at_s=600.0, kind="activate", person=0),
    ScriptedChange(at_s=1_200.0, kind="deactivate", person=1),
    ScriptedChange(at_s=1_800.0, kind="lost", person=2),
)


SMALL = BuildingConfig(
    seed=7,
    online_doors=3,
    offline_doors=3,
    residents=30,
    doors_per_person=3,
    opens_per_person_per_day=48.0,
    duration_s=3_600.0,
    changes=CHANGES,
)
"""Six doors, thirty residents, an hour: about 60 openings and three keycard changes."""


def _quiet() -> FastWorld:
    """A building without traffic: only what the test does happens."""
    return FastWorld(replace(SMALL, opens_per_person_per_day=0.0, changes=(), spare_cards=4))


# --- the scheduler ----------------------------------------------------------------------


def test_scheduler_runs_in_time_order_and_ties_in_scheduling_order() -> None:
    clock, seen = Scheduler(), list[tuple[float, str]]()
    for label, when in (("b", 2.0), ("a", 1.0), ("c", 2.0), ("late", 9.0)):
        clock.at(when, partial(lambda label: seen.append((clock.now, label)), label))
    clock.run_until(5.0)
    assert seen == [(1.0, "a"), (2.0, "b"), (2.0, "c")]
    assert clock.now == 5.0 and len(clock) == 1


def test_scheduler_refuses_the_past() -> None:
    clock = Scheduler()
    clock.run_until(3.0)
    with pytest.raises(SchedulingError):
        clock.at(2.0, lambda: None)
    with pytest.raises(SchedulingError):
        clock.after(-1.0, lambda: None)


def test_scheduler_process_steps_by_its_yielded_delays() -> None:
    clock, seen = Scheduler(), list[float]()

    def process() -> Process:
        seen.append(clock.now)
        yield 0.5
        seen.append(clock.now)
        yield 1.5
        seen.append(clock.now)

    clock.spawn(process(), delay=1.0)
    clock.run_until(10.0)
    assert seen == [1.0, 1.5, 3.0]


# --- determinism ------------------------------------------------------------------------


def test_same_seed_same_report_bytes_other_seed_other_bytes() -> None:
    first = run_fast(SMALL)[1]
    assert run_fast(SMALL)[1] == first
    assert run_fast(replace(SMALL, seed=8))[1] != first


_REPORT = (
    "import sys; from dataclasses import replace; from tests.test_fast_sim import SMALL;"
    " from simulators.fast import run_fast;"
    " sys.stdout.buffer.write(run_fast(replace(SMALL, duration_s=900.0))[1])"
)


def test_same_report_bytes_in_processes_with_different_hash_seeds() -> None:
    """Nothing depends on str hashing (set order): another process, same bytes."""
    outputs = [
        subprocess.run(
            [sys.executable, "-c", _REPORT],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            check=True,
            cwd=ROOT,
        ).stdout
        for hash_seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["access_events"] > 0


# --- sync paths -------------------------------------------------------------------------


def test_activation_reaches_online_doors_within_latency_and_offline_doors_by_phone() -> None:
    world = _quiet()
    world.run_until(100.0)
    changes = world.change(ScriptedChange(at_s=100.0, kind="activate", person=0))
    assert changes, "the activation changes the doors the resident opens"
    mqtt = world.config.mqtt
    world.run_until(100.0 + 2 * (mqtt.latency_s + mqtt.jitter_s))
    records = world.tracker.records
    online = [r for r in records if r.online]
    offline = [r for r in records if not r.online]
    assert online and offline
    one_way = mqtt.latency_s + mqtt.jitter_s
    for record in online:
        assert record.applied is not None and record.applied - 100.0 <= one_way
        assert record.synced is not None and record.synced - 100.0 <= 2 * one_way
    world.run_until(3_000.0)
    assert all(r.applied is None and r.synced is None for r in offline)
    for record in offline:
        carrier = next(p for p in world.people if p.phone is not None and record.door in p.doors)
        assert world.visit(carrier.index, record.door)
    world.run_until(3_010.0)
    for record in offline:
        assert record.applied is not None and 3_000.0 < record.applied < 3_005.0
        assert record.synced is not None and record.synced > record.applied
    assert world.figures()["pending_door_updates"] == 0


def test_revoked_card_is_refused_once_its_door_synced() -> None:
    world = _quiet()
    person = world.people[1]
    offline_door = next(d for d in person.doors if not world.doors[d].online)
    assert world.tap(1, 0) is Reason.GRANTED
    assert world.tap(1, offline_door) is Reason.GRANTED
    world.run_until(10.0)
    world.change(ScriptedChange(at_s=10.0, kind="deactivate", person=1))
    world.run_until(11.0)
    assert world.tap(1, 0) is not Reason.GRANTED  # online: revoked within milliseconds
    assert world.tap(1, offline_door) is Reason.GRANTED  # offline: not yet synced
    carrier = next(
        p for p in world.people if p.index != 1 and p.phone is not None and offline_door in p.doors
    )
    assert world.visit(carrier.index, offline_door)  # another resident's phone carries it
    world.run_until(20.0)
    assert world.tap(1, offline_door) is not Reason.GRANTED
    figures = world.figures()
    assert figures["revocation_latency_s_p50"] is not None
    assert figures["lost_updates"] == 0


# --- nothing lost -----------------------------------------------------------------------


@pytest.mark.parametrize("loss", [0.0, 0.3])
def test_no_audit_event_and_no_update_is_lost(loss: float) -> None:
    figures, _ = run_fast(replace(SMALL, mqtt=MqttModel(loss=loss)))
    assert figures["access_events"] and figures["changes"] == len(CHANGES)
    assert figures["door_updates"]
    assert figures["lost_audit_events"] == 0
    assert figures["lost_updates"] == 0
    if loss:
        assert figures["mqtt_retransmissions"]


# --- virtual time only ------------------------------------------------------------------


def test_a_run_never_reads_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    world = FastWorld(SMALL)

    def forbidden() -> float:
        raise AssertionError("the fast simulator read wall time")

    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, forbidden)
    world.run_until(world.config.duration_s)
    monkeypatch.undo()
    assert world.figures()["access_events"]


def test_the_loss_counters_see_a_lost_update_and_a_lost_audit_event() -> None:
    """The checks are not vacuous: a cloud that marks an update synced the lock never got,
    and a lock that drops events the cloud never stored, are both counted."""
    world = _quiet()
    door = next(d for d in world.doors if not d.online)
    person = next(p for p in world.people if door.index in p.doors)
    world.change(ScriptedChange(at_s=0.0, kind="deactivate", person=person.index))
    world.tap(person.index, door.index)
    figures = world.figures()
    assert figures["lost_updates"] == 0 and figures["lost_audit_events"] == 0
    with world.setup.sessions.begin() as session:
        row = session.get(Door, door.id)
        assert row is not None
        row.synced_version = row.list_version  # as if a forged receipt had been accepted
    audit = door.lock.state.audit
    audit.release(audit.next_seq - 1)  # as if a forged ack had freed every event
    figures = world.figures()
    assert figures["lost_updates"] == 1
    assert figures["lost_audit_events"] == audit.next_seq - 1


def test_the_hourly_profile_shapes_when_doors_open() -> None:
    night_and_day = (0.0,) * 12 + (1.0,) * 12  # nobody opens a door before noon
    config = replace(
        SMALL, changes=(), duration_s=86_400.0, hourly_profile=night_and_day, offline_doors=0
    )
    world = FastWorld(config)
    world.run_until(43_200.0)
    assert world.stats.access_events == 0
    world.run_until(86_400.0)
    expected = config.residents * config.opens_per_person_per_day
    assert 0.8 * expected < world.stats.access_events < 1.2 * expected


def test_a_broker_outage_delays_online_updates_and_loses_nothing() -> None:
    outage = (100.0, 400.0)
    config = replace(SMALL, mqtt=MqttModel(outages=(outage,)), changes=(), spare_cards=2)
    world = FastWorld(config)
    world.run_until(200.0)
    world.change(ScriptedChange(at_s=200.0, kind="activate", person=3))
    world.run_until(399.0)
    online = [r for r in world.tracker.records if r.online]
    assert online and all(r.applied is None and r.synced is None for r in online)
    world.run_until(401.0)
    assert all(r.applied is not None and r.synced is not None for r in online)
    world.run_until(config.duration_s)
    figures = world.figures()
    assert figures["lost_audit_events"] == 0 and figures["lost_updates"] == 0
    assert figures["time_to_sync_s_p50_online"] is not None
    assert figures["time_to_sync_s_p50_online"] >= outage[1] - 200.0


def test_phones_offline_still_carry_bundles_and_upload_when_back() -> None:
    config = replace(
        SMALL, phones_offline=((50.1, 1_000.0),), opens_per_person_per_day=0.0, changes=()
    )
    world = FastWorld(config)
    door = next(d for d in world.doors if not d.online)
    person = next(p for p in world.people if door.index in p.doors)
    carrier = next(
        p for p in world.people if p.phone is not None and door.index in p.doors and p != person
    )
    world.change(ScriptedChange(at_s=0.0, kind="deactivate", person=person.index))
    world.run_until(50.0)
    assert world.visit(carrier.index, door.index)  # prefetched online, carried offline
    world.run_until(60.0)
    (record,) = (r for r in world.tracker.records if r.door == door.index)
    assert record.applied is not None and 50.0 < record.applied < 51.0
    assert record.synced is None  # the receipt waits on the phone
    assert world.tap(person.index, door.index) is not Reason.GRANTED
    world.run_until(1_001.0)
    assert record.synced is not None and record.synced >= 1_000.0
    figures = world.figures()
    assert figures["lost_audit_events"] == 0 and figures["lost_updates"] == 0


def test_a_building_too_big_for_its_locks_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="lock_capacity"):
        replace(SMALL, residents=6_000)
