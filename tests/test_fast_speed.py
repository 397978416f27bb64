"""The fast runner's shortcuts compute what the plain ORM paths compute.

Each shortcut the runner takes for speed (:mod:`simulators.fast.scenario_run`,
:mod:`simulators.fast.scenario_setup`) is checked against the ORM statement it replaces,
on a small example scenario built and run on the virtual clock.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy import func, select

from cloud.models import Door
from simulators.fast.scenario_run import ScenarioRun
from simulators.scenario import load_scenario

SMALL = Path(__file__).parent.parent / "simulators" / "scenarios" / "small_building.toml"


def _run(hours: float) -> ScenarioRun:
    scenario = dataclasses.replace(load_scenario(SMALL), duration_s=hours * 3600)
    return ScenarioRun(scenario)


def test_commissioning_leaves_every_door_synced_to_its_first_list() -> None:
    run = _run(1)
    with run.setup.sessions() as session:
        doors = session.scalars(select(Door)).all()
        assert doors
        for door in doors:
            assert door.synced_version == door.list_version
            assert door.capacity_error is None


def test_commissioned_locks_hold_the_version_the_cloud_recorded_as_synced() -> None:
    run = _run(1)
    with run.setup.sessions() as session:
        synced = dict(session.execute(select(Door.id, Door.synced_version)).all())
    for door in run.doors:
        assert run.held_version(door) == synced[door.spec.id]


def test_audit_stored_is_the_orm_sum_of_the_doors_audit_sequences() -> None:
    run = _run(12)
    run.run()
    with run.setup.sessions() as session:
        stored = session.execute(select(func.sum(Door.audit_next_seq - 1))).scalar() or 0
    assert stored > 0
    assert run._audit_stored() == stored


def test_the_samples_count_every_event_the_locks_made() -> None:
    run = _run(12)
    run.run()
    at, made, stored = run.samples[-1]
    assert at == run.scenario.duration_s
    assert made == sum(run.state_of(door).audit.next_seq - 1 for door in run.doors)
    assert 0 < stored <= made
