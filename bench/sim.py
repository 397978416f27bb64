"""Fast building simulation: access events per wall second on a few-hundred-door building.

Theory of operation: one seeded building (``DOORS_ONLINE`` online and
``DOORS_OFFLINE`` offline doors, ``RESIDENTS`` residents, keycard changes scattered
over the day) is built untimed (:func:`simulators.fast.building.build`: database,
provisioned and commissioned locks), then one simulated day runs on the virtual
clock and is timed with ``perf_counter``. ``fast_events_per_s`` is the run's access
decisions (card taps through the lock's real challenge-response, phone unlocks with
real signatures) divided by its wall seconds: everything in the run counts, the
cloud's transactions, audit ingest and the BLE and MQTT models included.
``--quick`` simulates two hours instead of a day.

``fast_scenario_*`` run a scenario file through :func:`simulators.fast.scenario_run`
(``simulators/scenarios/traffic.toml``: 42 doors, 60 people; one day with ``--quick``,
its three days without): the world is built untimed, the run is timed, and its loss
checks must be 0 as well. The live-mode figures of the issue (``live_doors_sustained``)
and the 1,000-door week are not measured here yet.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from simulators.fast import BuildingConfig, FastWorld, ScriptedChange
from simulators.fast.building import RESIDENTIAL, ChangeKind
from simulators.fast.scenario_run import ScenarioRun
from simulators.scenario import load_scenario

from . import Figures, Goal

__all__ = ["GOALS", "UNITS", "run"]

GOALS: dict[str, Goal] = {
    "fast_events_per_s": (">=", 20_000),
    "fast_lost_audit_events": ("==", 0),
    "fast_lost_updates": ("==", 0),
    "fast_scenario_lost_audit_events": ("==", 0),
    "fast_scenario_lost_updates": ("==", 0),
}
UNITS: dict[str, str] = {
    "fast_events_per_s": "events/s",
    "fast_lock_taps_per_s": "events/s",
    "fast_run_s": "s",
    "fast_build_s": "s",
    "fast_sim_s": "s",
    "fast_scenario_events_per_s": "events/s",
    "fast_scenario_build_s": "s",
    "fast_scenario_run_s": "s",
}
DOORS_ONLINE, DOORS_OFFLINE, RESIDENTS = 200, 100, 3_000
DAY_S = 86_400.0
SCENARIO = Path(__file__).resolve().parent.parent / "simulators" / "scenarios" / "traffic.toml"


def _config(duration_s: float) -> BuildingConfig:
    kinds: tuple[ChangeKind, ...] = ("activate", "deactivate", "lost")
    changes = tuple(
        ScriptedChange(at_s=duration_s * (n + 1) / 61, kind=kinds[n % 3], person=n * 37 % RESIDENTS)
        for n in range(60)
    )
    return BuildingConfig(
        seed=2026,
        online_doors=DOORS_ONLINE,
        offline_doors=DOORS_OFFLINE,
        residents=RESIDENTS,
        doors_per_person=4,
        opens_per_person_per_day=8.0,
        hourly_profile=RESIDENTIAL,
        duration_s=duration_s,
        changes=changes,
        audit_flush_s=3_600.0,
    )


def _scenario(quick: bool) -> Figures:
    """The scenario runner on ``traffic.toml`` (one day of it with ``quick``)."""
    scenario = load_scenario(SCENARIO)
    if quick:
        scenario = dataclasses.replace(scenario, duration_s=min(scenario.duration_s, DAY_S))
    start = time.perf_counter()
    world = ScenarioRun(scenario)
    built = time.perf_counter()
    outcome = world.run()
    ran = time.perf_counter()
    figures = outcome.figures
    events = int(figures["access_events"] or 0)
    return {
        "fast_scenario_events_per_s": round(events / (ran - built), 1),
        "fast_scenario_access_events": events,
        "fast_scenario_build_s": round(built - start, 3),
        "fast_scenario_run_s": round(ran - built, 3),
        "fast_scenario_lost_audit_events": int(figures["lost_audit_events"] or 0),
        "fast_scenario_lost_updates": int(figures["lost_updates"] or 0),
    }


def run(quick: bool) -> Figures:
    """Build untimed, run the simulated span timed, report the rate and the loss checks."""
    config = _config(7_200.0 if quick else DAY_S)
    start = time.perf_counter()
    world = FastWorld(config, meter=time.perf_counter)
    built = time.perf_counter()
    world.run_until(config.duration_s)
    ran = time.perf_counter()
    figures = world.figures()
    events = int(figures["access_events"] or 0)
    run_s = ran - built
    cloud_s, lock_s = world.spent["cloud"], world.spent["lock"]
    taps = 20_000
    tapped = time.perf_counter()
    for n in range(taps):  # the lock and card alone: no cloud, no network model
        world.tap(n % RESIDENTS, 0)
    lock_only = taps / (time.perf_counter() - tapped)
    return {
        "fast_events_per_s": round(events / run_s, 1),
        "fast_access_events": events,
        "fast_lock_taps_per_s": round(lock_only, 1),
        "fast_doors": DOORS_ONLINE + DOORS_OFFLINE,
        "fast_residents": RESIDENTS,
        "fast_sim_s": config.duration_s,
        "fast_build_s": round(built - start, 3),
        "fast_run_s": round(run_s, 3),
        "fast_cloud_share": round(cloud_s / run_s, 3),
        "fast_lock_share": round(lock_s / run_s, 3),
        "fast_cloud_transactions": int(figures["cloud_transactions"] or 0),
        "fast_lost_audit_events": int(figures["lost_audit_events"] or 0),
        "fast_lost_updates": int(figures["lost_updates"] or 0),
        **_scenario(quick),
    }
