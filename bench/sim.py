"""Fast building simulation: access events per wall second, and a 1,000-door week.

Theory of operation: both figures run scenario files of ``simulators/scenarios/`` through
the scenario runner (:class:`simulators.fast.scenario_run.ScenarioRun`), the one fast
mode ``doorsim run`` uses: real lock cores on in-memory flash, the cloud's rules and sync
engine on SQLite, real crypto (card challenge-response, Ed25519, sealed bundles), the
MQTT and BLE models in between.

* ``fast_events_per_s`` — ``bench_residential.toml``: one residential tower, 300 doors,
  3,000 residents, one day (its first eight hours with ``--quick``), with a realistic,
  keycard-heavy mix: in residential buildings most openings are card taps, here 90 %
  (10 % phone unlocks, which also carry the apartments' updates and audit) and a few
  keycard changes. The world is built untimed; the run is timed with ``perf_counter``
  and the figure is its access decisions divided by its wall seconds: everything in the
  run counts (the cloud's transactions, audit ingest, the network models).
* ``fast_1000_doors_10000_people_7_days_s`` — ``bench_week.toml``: four towers, 1,000
  doors, 10,000 people, seven days, 85 % card taps, a keycard change every six hours; the
  wall seconds of the whole run, build included. ``--quick`` runs its first day only and
  reports ``fast_1000_doors_10000_people_1_day_s`` instead (no goal: it is not the
  issue's figure).

The loss checks of both runs (``*_lost_audit_events``, ``*_lost_updates``) must be 0.

* The crypto in both runs (:mod:`bench._signatures`): ``fast_ed25519_signs`` and
  ``_verifies`` count the residential run's Ed25519 operations; ``ed25519_sign_us`` and
  ``ed25519_verify_us`` time one of each on this machine; ``fast_signature_floor_s`` and
  ``fast_week_signature_floor_s`` are the wall seconds those operations alone take, and
  ``fast_events_per_s_signature_ceiling`` the access events per second the residential run
  could reach if nothing but its signatures cost anything. No goal: they say how much of a
  rate is crypto, and they track the machine's speed.

* ``live_doors_sustained`` and its companions (``live_*``) — live mode on real parts:
  the most online doors a live run keeps every update receipted within 2 s
  (:mod:`bench.sim_live` says how it searches).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from simulators.fast.scenario_run import ScenarioRun
from simulators.outcome import Figure
from simulators.scenario import load_scenario

from . import Figures, Goal
from ._signatures import UnitCosts, counted, unit_costs
from .sim_live import LIVE_GOALS, LIVE_UNITS, live_figures

__all__ = ["GOALS", "UNITS", "run"]

WEEK_KEY = "fast_1000_doors_10000_people_7_days_s"
GOALS: dict[str, Goal] = {
    "fast_events_per_s": (">=", 20_000),
    "fast_lost_audit_events": ("==", 0),
    "fast_lost_updates": ("==", 0),
    WEEK_KEY: ("<=", 60),
    "fast_week_lost_audit_events": ("==", 0),
    "fast_week_lost_updates": ("==", 0),
    **LIVE_GOALS,
}
UNITS: dict[str, str] = {
    "fast_events_per_s": "events/s",
    "fast_build_s": "s",
    "fast_run_s": "s",
    "fast_sim_s": "s",
    WEEK_KEY: "s",
    "fast_1000_doors_10000_people_1_day_s": "s",
    "fast_week_build_s": "s",
    "fast_week_events_per_s": "events/s",
    "fast_signature_floor_s": "s",
    "fast_events_per_s_signature_ceiling": "events/s",
    "fast_week_signature_floor_s": "s",
    "ed25519_sign_us": "us",
    "ed25519_verify_us": "us",
    **LIVE_UNITS,
}
SCENARIOS = Path(__file__).resolve().parent.parent / "simulators" / "scenarios"
RESIDENTIAL = SCENARIOS / "bench_residential.toml"
WEEK = SCENARIOS / "bench_week.toml"
QUICK_S = 8 * 3_600.0
"""``--quick`` runs the residential tower's first eight hours."""
DAY_S = 86_400.0


def _int(figure: Figure) -> int:
    return int(figure or 0)


def _residential(quick: bool, costs: UnitCosts) -> Figures:
    """Build untimed, run timed: the rate of access decisions and the loss checks."""
    scenario = load_scenario(RESIDENTIAL)
    if quick:
        scenario = dataclasses.replace(scenario, duration_s=QUICK_S)
    start = time.perf_counter()
    world = ScenarioRun(scenario)
    built = time.perf_counter()
    with counted() as signatures:
        figures = world.run().figures
    run_s = time.perf_counter() - built
    events = _int(figures["access_events"])
    floor_s = signatures.floor_s(costs)
    return {
        "fast_events_per_s": round(events / run_s, 1),
        "fast_ed25519_signs": signatures.signs,
        "fast_ed25519_verifies": signatures.verifies,
        "fast_signature_floor_s": round(floor_s, 3),
        "fast_events_per_s_signature_ceiling": round(events / floor_s, 1) if floor_s else 0,
        "fast_access_events": events,
        "fast_card_taps": _int(figures["card_taps"]),
        "fast_phone_visits": _int(figures["phone_visits"]),
        "fast_doors": _int(figures["doors"]),
        "fast_people": _int(figures["people"]),
        "fast_sim_s": scenario.duration_s,
        "fast_build_s": round(built - start, 3),
        "fast_run_s": round(run_s, 3),
        "fast_cloud_transactions": _int(figures["cloud_transactions"]),
        "fast_lost_audit_events": _int(figures["lost_audit_events"]),
        "fast_lost_updates": _int(figures["lost_updates"]),
    }


def _week(quick: bool, costs: UnitCosts) -> Figures:
    """The whole week (its first day with ``quick``), build included, in wall seconds."""
    scenario = load_scenario(WEEK)
    key = WEEK_KEY
    if quick:
        scenario = dataclasses.replace(scenario, duration_s=DAY_S)
        key = "fast_1000_doors_10000_people_1_day_s"
    start = time.perf_counter()
    world = ScenarioRun(scenario)
    built = time.perf_counter()
    with counted() as signatures:
        figures = world.run().figures
    ran = time.perf_counter()
    events = _int(figures["access_events"])
    return {
        key: round(ran - start, 3),
        "fast_week_build_s": round(built - start, 3),
        "fast_week_access_events": events,
        "fast_week_events_per_s": round(events / (ran - built), 1),
        "fast_week_signature_floor_s": round(signatures.floor_s(costs), 3),
        "fast_week_lost_audit_events": _int(figures["lost_audit_events"]),
        "fast_week_lost_updates": _int(figures["lost_updates"]),
    }


def run(quick: bool) -> Figures:
    """The residential rate, the 1,000-door week, then live capacity (module docstring)."""
    costs = unit_costs()
    machine = {
        "ed25519_sign_us": round(costs.sign_s * 1e6, 1),
        "ed25519_verify_us": round(costs.verify_s * 1e6, 1),
    }
    return {**machine, **_residential(quick, costs), **_week(quick, costs), **live_figures(quick)}
