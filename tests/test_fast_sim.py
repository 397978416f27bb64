"""The fast mode's parts under the scenario runner: the scheduler, a lossy MQTT model, and
loss counters that do see a loss.

The scenario runner's contract (openings, faults, reports) is tested in
``test_fast_scenario.py``; these are the checks that only make sense one level down.
"""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy import update

from cloud.models import Door
from simulators.fast.clock import Process, Scheduler, SchedulingError
from simulators.fast.net import MqttModel
from simulators.fast.scenario_run import ScenarioRun
from tests.test_fast_scenario import event, nothing_lost, scenario

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


# --- nothing lost -----------------------------------------------------------------------


def test_a_lossy_mqtt_path_delays_but_loses_no_update_and_no_audit_event() -> None:
    """QoS 1 retransmits what the model drops: the outcome's decisions stay the same."""
    plan = scenario(
        event("deactivate", "2h", person="Ben", by="Maya")
        + event("activate", "5h", person="Ben", by="Maya"),
        duration="8h",
    )
    lossless = ScenarioRun(plan).run()
    run = ScenarioRun(plan, mqtt=MqttModel(loss=0.3))
    outcome = run.run()
    links = [link for door in run.doors for link in (door.up, door.down) if link is not None]
    assert sum(link.retransmissions for link in links) > 0
    assert outcome.figures["door_updates"] == 4
    late = outcome.figures["time_to_sync_s_p99_online"]
    assert late is not None and late > 2.0  # a lost message waits for its retry
    assert [d.reason for d in outcome.decisions] == [d.reason for d in lossless.decisions]
    nothing_lost(outcome)


def test_the_loss_counters_see_a_lost_update_and_a_lost_audit_event() -> None:
    """The checks are not vacuous: a cloud that marks an update synced the lock never got,
    and a lock that drops events the cloud never stored, are both counted."""
    run = ScenarioRun(scenario(event("deactivate", "1h", person="Ben", by="Maya"), rate=0.0))
    run.clock.run_until(3_600.5)
    basement = run.doors[run.setup.door_at[("Tower", "Basement")]]
    assert run.figures()["lost_updates"] == 0 and run.figures()["lost_audit_events"] == 0
    with run.setup.sessions.begin() as session:  # as if a forged receipt had been accepted
        query = update(Door).where(Door.id == basement.spec.id)
        session.execute(query.values(synced_version=Door.list_version))
    ben = run.people[run.setup.person_at["Ben"]]
    assert run.tap(ben, basement) is not None  # an event only the BLE-only lock holds
    assert basement.lock is not None
    audit = basement.lock.controller.state.audit
    audit.release(audit.next_seq - 1)  # as if a forged ack had freed every event
    figures = run.figures()
    assert figures["lost_updates"] == 1
    assert figures["lost_audit_events"] == audit.next_seq - 1 > 0
