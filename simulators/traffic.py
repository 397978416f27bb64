"""Who opens which door when: a scenario's traffic as one deterministic list.

Theory of operation: both modes of ``doorsim`` replay the *same* openings, so a live run
and a fast run of one scenario can be compared decision by decision. :func:`openings`
draws them from the scenario alone (its traffic model, people, access and seed) with a
private ``random.Random``: each person opens doors as a Poisson process at the peak
hour's rate, thinned by the time-of-day profile (an hour of weight ``w`` keeps ``w /
peak`` of its candidates; the profile's hours are hours of the scenario's ``start``
clock); each opening picks one of the person's doors uniformly and uses the phone with
probability ``phone_share`` if the person has the app, else the card (a person without
cards and without the app opens nothing). The result is sorted by time, ties by person
then door name, and is the same for the same scenario on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from ._scenario_model import Person, Scenario

__all__ = ["Opening", "Via", "openings"]

Via = Literal["card", "phone"]
DAY_S = 86_400.0
HOUR_S = 3_600.0


@dataclass(frozen=True, order=True)
class Opening:
    """At ``at_s`` (seconds from the scenario's start) ``person`` opens ``door`` of
    ``building`` with their first card or their phone."""

    at_s: float
    person: str
    building: str
    door: str
    via: Via


def openings(scenario: Scenario) -> list[Opening]:
    """Every opening of the scenario, in time order (see the module docstring)."""
    traffic = scenario.traffic
    shares = traffic.hour_shares()
    peak = max(shares)
    if peak <= 0 or traffic.openings_per_person_per_day <= 0:
        return []
    keep = [share / peak for share in shares]
    # Rate of candidate openings per person per second at the peak hour.
    peak_rate = traffic.openings_per_person_per_day * peak * 24 / DAY_S
    offset_s = scenario.start.hour * HOUR_S + scenario.start.minute * 60 + scenario.start.second
    found: list[Opening] = []
    for index, person in enumerate(scenario.people):
        rng = random.Random(f"{scenario.seed}/traffic/{index}/{person.name}")
        found.extend(_person_openings(scenario, person, rng, peak_rate, keep, offset_s))
    found.sort(key=lambda o: (o.at_s, o.person, o.building, o.door))
    return found


def _person_openings(
    scenario: Scenario,
    person: Person,
    rng: random.Random,
    peak_rate: float,
    keep: list[float],
    offset_s: float,
) -> Iterator[Opening]:
    doors = [(access.building, door) for access in person.access for door in access.doors]
    if not doors or not (person.cards or person.phone):
        return
    phone_share = scenario.traffic.phone_share if person.phone else 0.0
    if not person.cards:
        phone_share = 1.0
    at = 0.0
    while True:
        at += rng.expovariate(peak_rate)
        if at >= scenario.duration_s:
            return
        hour = int((at + offset_s) // HOUR_S) % 24
        # Draw every number whether or not it is kept, so one person's later openings do
        # not depend on which earlier candidates were thinned.
        thin, pick, phone = rng.random(), rng.randrange(len(doors)), rng.random()
        if thin >= keep[hour]:
            continue
        building, door = doors[pick]
        yield Opening(at, person.name, building, door, "phone" if phone < phone_share else "card")
