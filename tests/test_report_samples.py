"""Run outcomes of many shapes for the report tests, built by hand (no runner needed).

Each builder returns a fresh :class:`RunOutcome` shaped like a real run's: ``quiet`` has
no series at all and None percentiles; ``busy`` has hundreds of doors, thousands of
pending-count points, online syncs in milliseconds and offline ones in hours (a range
that needs a log axis), faults and decisions; ``lossy`` lost updates and audit events;
``hostile`` names everything with markup, quotes, control characters and rich markup;
``broken`` misses figures and holds NaN and infinities. The tests at the bottom check
the samples themselves.
"""

from __future__ import annotations

import random

from simulators.outcome import (
    KEY_FIGURES,
    Decision,
    DoorTraffic,
    FaultRecord,
    RunOutcome,
    Series,
)

HOSTILE = "<script>alert('x')</script> & \"quotes\" [bold red]rich[/] \x1b[31m\x00\x07 é ✓"


def figures(**overrides: int | float | None) -> dict[str, int | float | None]:
    base: dict[str, int | float | None] = {
        "changes": 12,
        "door_updates": 140,
        "time_to_sync_s_p50_online": 0.041,
        "time_to_sync_s_p99_online": 0.212,
        "time_to_sync_s_p50_offline": 5_400.25,
        "time_to_sync_s_p99_offline": 61_000.5,
        "revocation_latency_s_p50": 0.05,
        "revocation_latency_s_p99": 7_200.0,
        "access_events": 12_345,
        "denied_events": 67,
        "lost_audit_events": 0,
        "lost_updates": 0,
    }
    base.update(overrides)
    return base


def quiet() -> RunOutcome:
    return RunOutcome(
        scenario="Quiet",
        mode="fast",
        seed=1,
        duration_s=3600.0,
        figures=figures(
            changes=0,
            door_updates=0,
            time_to_sync_s_p50_online=None,
            time_to_sync_s_p99_online=None,
            time_to_sync_s_p50_offline=None,
            time_to_sync_s_p99_offline=None,
            revocation_latency_s_p50=None,
            revocation_latency_s_p99=None,
            access_events=0,
            denied_events=0,
        ),
    )


def busy(seed: int = 7) -> RunOutcome:
    rng = random.Random(seed)
    day = 86_400.0
    pending, count, t = [], 0, 0.0
    for _ in range(6_000):
        t += rng.expovariate(6_000 / day)
        count = max(0, count + rng.choice((-1, 1, 1)) if t < day / 2 else count - 1)
        pending.append((t, count))
    doors = [
        DoorTraffic(
            building=f"Tower {i // 100}",
            door=f"Door {i}",
            online=i % 3 == 0,
            bundle_bytes=rng.randint(0, 40_000),
            ble_airtime_s=0.0 if i % 3 == 0 else rng.uniform(0, 30),
        )
        for i in range(300)
    ]
    made, stored, audit = 0, 0, []
    for step in range(200):
        made += rng.randint(0, 50)
        stored = min(made, stored + rng.randint(0, 60))
        audit.append((step * day / 200, made, stored))
    return RunOutcome(
        scenario="Busy campus",
        mode="fast",
        seed=seed,
        duration_s=day,
        figures={**figures(), "wall_s": 12.5, "pending_door_updates": 3},
        decisions=[
            Decision(
                at_s=i * 60.5,
                person=f"Person {i % 17}",
                building="Tower 0",
                door=f"Door {i % 9}",
                via="card" if i % 2 else "phone",
                granted=i % 11 != 0,
                reason="GRANTED" if i % 11 else "REVOKED",
            )
            for i in range(500)
        ],
        faults=[
            FaultRecord(3600.0, "broker_outage", "broker", "40 bundles held 7,200 s; nothing lost"),
            FaultRecord(9000.5, "power_cut", "Tower 0/Door 1", "update rolled back, re-sent"),
        ],
        series=Series(
            pending_doors=pending,
            time_to_sync_s={
                "online": [rng.uniform(0.01, 0.3) for _ in range(900)],
                "offline": [rng.uniform(60, 80_000) for _ in range(400)],
            },
            revocation_latency_s=[rng.uniform(0.02, 9_000) for _ in range(50)],
            doors=doors,
            audit_completeness=audit,
        ),
    )


def lossy() -> RunOutcome:
    outcome = busy(seed=3)
    outcome.figures.update(lost_updates=2, lost_audit_events=1)
    return outcome


def hostile() -> RunOutcome:
    outcome = busy(seed=5)
    outcome.scenario = HOSTILE
    outcome.faults = [FaultRecord(1.0, HOSTILE, HOSTILE, HOSTILE)]
    outcome.series.doors = [
        DoorTraffic(HOSTILE, HOSTILE, False, 100, 1.5),
        DoorTraffic("A&B", "<door>", True, 200, 0.0),
    ]
    outcome.figures[HOSTILE] = 1
    return outcome


def broken() -> RunOutcome:
    outcome = busy(seed=9)
    del outcome.figures["denied_events"]
    outcome.figures["lost_updates"] = None
    outcome.figures["revocation_latency_s_p50"] = float("nan")
    outcome.figures["time_to_sync_s_p99_online"] = float("inf")
    outcome.series.revocation_latency_s = [float("nan"), 1.0, float("inf")]
    outcome.series.time_to_sync_s = {"online": [0.0, 0.0], "radio": [5.0]}
    outcome.series.doors[0] = DoorTraffic("X", "Y", False, 10, float("nan"))
    return outcome


def every_sample() -> dict[str, RunOutcome]:
    return {
        "quiet": quiet(),
        "busy": busy(),
        "lossy": lossy(),
        "hostile": hostile(),
        "broken": broken(),
    }


def test_samples_have_every_key_figure_but_the_broken_one() -> None:
    for name, outcome in every_sample().items():
        missing = set(KEY_FIGURES) - set(outcome.figures)
        assert missing == ({"denied_events"} if name == "broken" else set()), name


def test_samples_verdicts() -> None:
    assert {name: o.ok for name, o in every_sample().items()} == {
        "quiet": True,
        "busy": True,
        "lossy": False,
        "hostile": True,
        "broken": False,
    }
