"""The live-mode benchmark (``bench/sim_live.py``): its scenarios, its search, one tiny run.

The generated scenario is checked through the scenario parser (the same path a file
takes); the search is checked against a stand-in trial whose machine sustains exactly 40
doors and a stand-in clock; one real live run of two doors (about 6 s of wall time, on
Mosquitto when it is reachable) must sustain them.
"""

from __future__ import annotations

from dataclasses import replace

from bench.sim_live import (
    SYNC_LIMIT_S,
    Load,
    SearchPlan,
    Trial,
    bench_scenario,
    judge,
    preferred_broker,
    run_trial,
    search,
)
from simulators.outcome import RunOutcome
from simulators.scenario import Activate, Deactivate


def test_the_scenario_has_n_online_doors_and_alternating_bursts() -> None:
    load = Load(doors=5, duration_s=6.0, burst=2)
    scenario = bench_scenario(load)
    assert scenario.door_count == scenario.online_door_count == 5
    assert load.burst_times() == [1.0, 3.5]  # the last one >= SYNC_LIMIT_S before the end
    assert 3.5 + SYNC_LIMIT_S < scenario.duration_s == 6.0
    changes = [e for e in scenario.events if isinstance(e, Activate | Deactivate)]
    assert len(changes) == len(scenario.events)
    assert [(e.at_s, e.kind, e.person, e.by) for e in changes] == [
        (1.0, "activate", "Keyholder 1", "Bench Manager"),
        (1.0, "activate", "Keyholder 2", "Bench Manager"),
        (3.5, "deactivate", "Keyholder 1", "Bench Manager"),
        (3.5, "deactivate", "Keyholder 2", "Bench Manager"),
    ]
    keyholder = next(p for p in scenario.people if p.name == "Keyholder 1")
    assert len(keyholder.access[0].doors) == 5 and not keyholder.phone
    assert sum(p.name.startswith("Resident") for p in scenario.people) == 5
    assert (load.changes, load.door_updates) == (4, 20)


def test_search_doubles_then_bisects_to_an_eighth() -> None:
    def trial(doors: int) -> Trial:
        return Trial(doors, "" if doors <= 40 else "too slow", wall_s=1.0, late=doors > 40)

    plan = SearchPlan(start=8, budget_s=1e9, duration_s=1.0)
    ran = [t.doors for t in search(plan, trial)]
    assert ran == [8, 16, 32, 64, 48, 40, 44]
    retried = [t.doors for t in search(replace(plan, tries=2), trial)]
    assert retried == [8, 16, 32, 64, 64, 48, 48, 40, 44, 44]  # only late counts again


def test_a_count_that_passes_on_its_second_try_is_sustained() -> None:
    tries: dict[int, int] = {}

    def trial(doors: int) -> Trial:
        tries[doors] = tries.get(doors, 0) + 1
        late = doors > 40 or (doors == 32 and tries[doors] == 1)  # 32: disturbed once
        return Trial(doors, "too slow" if late else "", wall_s=1.0, late=late)

    plan = SearchPlan(start=32, budget_s=1e9, duration_s=1.0, tries=2)
    assert [t.doors for t in search(plan, trial)][:3] == [32, 32, 64]


def test_search_stops_before_a_run_that_would_overrun_the_budget() -> None:
    now = [0.0]

    def trial(doors: int) -> Trial:
        now[0] += doors  # a run takes a second per door
        return Trial(doors, "", wall_s=float(doors))

    plan = SearchPlan(start=8, budget_s=100.0, duration_s=0.0)
    ran = search(plan, trial, clock=lambda: now[0])
    assert [t.doors for t in ran] == [8, 16, 32]  # 56 s spent; 64 more would pass 100


def test_a_tiny_live_run_sustains_two_doors() -> None:
    url, _ = preferred_broker()
    trial = run_trial(Load(doors=2, duration_s=4.0), url)
    assert trial.sustained, trial.why
    assert len(trial.sync_s) == 6 and max(trial.sync_s) <= SYNC_LIMIT_S


def outcome_of(load: Load, sync_s: list[float], **figures: int) -> RunOutcome:
    """A stand-in live outcome of ``load``: every change made, nothing lost, unless told."""
    made = {"errors": 0, "refused_changes": 0, "changes": load.changes}
    made |= {"door_updates": load.door_updates, "lost_updates": 0, "lost_audit_events": 0}
    outcome = RunOutcome("bench", "live", 0, load.duration_s, figures={**made, **figures})
    outcome.series.time_to_sync_s = {"online": sync_s, "offline": []}
    return outcome


def test_judge_tells_late_from_wrong() -> None:
    load = Load(doors=2, duration_s=4.0)  # one burst of 3 changes: 6 updates
    assert judge(outcome_of(load, [0.5] * 6), load) == ("", True)
    assert judge(outcome_of(load, [0.5] * 5 + [2.5]), load) == (
        "slowest receipt 2.50 s > 2.0 s",
        True,
    )
    assert judge(outcome_of(load, [0.5] * 5), load) == ("1 of 6 updates not receipted", True)
    assert judge(outcome_of(load, [0.5] * 6, lost_updates=1), load) == (
        "lost_updates 1, lost_audit_events 0",
        False,
    )
