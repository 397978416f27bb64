"""The traffic draw: :func:`simulators.traffic.openings` draws from ``random.Random``'s
primitives exactly what the reference draws through its distributions (``expovariate``,
``randrange``), number for number, and orders the openings as a stable sort on
(time, person, building, door) does."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators._scenario_model import Access, Person, Scenario, Traffic
from simulators.scenario import load_scenario
from simulators.traffic import (
    Opening,
    _in_time_order,
    _openings,
    _person_openings,
    _reference_person_openings,
    openings,
)

BASE = load_scenario(Path(__file__).parent.parent / "simulators/scenarios/traffic.toml")
DOORS = [door.name for door in BASE.buildings[0].doors]

people = st.builds(
    lambda n, doors, cards, phone: Person(
        name=f"P{n}",
        email=f"p{n}@example.com",
        cards=tuple(f"card {n}/{c}" for c in range(cards)),
        cards_active=True,
        phone=phone,
        access=(Access(building=BASE.buildings[0].name, doors=tuple(doors)),) if doors else (),
    ),
    st.integers(0, 10**6),
    st.lists(st.sampled_from(DOORS), max_size=len(DOORS), unique=True),
    st.integers(0, 2),
    st.booleans(),
)
traffics = st.builds(
    Traffic,
    openings_per_person_per_day=st.floats(0.5, 200.0),
    phone_share=st.floats(0.0, 1.0),
    profile=st.lists(st.floats(0.0, 10.0), min_size=24, max_size=24).filter(any).map(tuple),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    crowd = draw(st.lists(people, min_size=1, max_size=6, unique_by=lambda p: p.name))
    return dataclasses.replace(
        BASE,
        seed=draw(st.integers(0, 2**63)),
        duration_s=draw(st.floats(1.0, 3 * 86_400.0)),
        start=datetime(2026, 3, 1, draw(st.integers(0, 23)), draw(st.integers(0, 59)), tzinfo=UTC),
        people=tuple(crowd),
        traffic=draw(traffics),
    )


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.data())
def test_person_draw_matches_the_distributions(scenario: Scenario, data: st.DataObject) -> None:
    """Same openings and the same generator state after, for any person and seed."""
    person = data.draw(st.sampled_from(scenario.people))
    keep = [data.draw(st.floats(0.0, 1.0)) for _ in range(24)]
    rate, offset = data.draw(st.floats(1e-5, 1e-2)), data.draw(st.floats(0.0, 86_399.0))
    seed = data.draw(st.text(max_size=20))
    fast, reference = random.Random(seed), random.Random(seed)
    drawn = _person_openings(scenario, person, fast, rate, keep, offset)
    assert drawn == _reference_person_openings(scenario, person, reference, rate, keep, offset)
    assert fast.getstate() == reference.getstate()


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_openings_match_the_reference(scenario: Scenario) -> None:
    assert openings(scenario) == _openings(scenario, _reference_person_openings)


times = st.sampled_from([0.0, 1.5, 2.0, 1e-9])
names = st.sampled_from(["a", "b"])


@given(st.lists(st.builds(Opening, times, names, names, names, st.sampled_from(["card", "phone"]))))
def test_time_order_is_a_stable_sort_on_the_full_key(found: list[Opening]) -> None:
    """Equal times (and equal keys with another ``via``) order as the full key's stable sort."""
    expected = sorted(found, key=lambda o: (o.at_s, o.person, o.building, o.door))
    _in_time_order(found)
    assert found == expected


def test_bench_week_draws_the_reference_openings() -> None:
    """The benchmark's 10,000 people, for one day: the very same list."""
    week = load_scenario(Path(__file__).parent.parent / "simulators/scenarios/bench_week.toml")
    day = dataclasses.replace(week, duration_s=86_400.0)
    assert openings(day) == _openings(day, _reference_person_openings)
