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
from collections.abc import Callable
from math import log
from operator import itemgetter
from typing import Literal, NamedTuple

from ._scenario_model import Person, Scenario

__all__ = ["Opening", "Via", "openings"]

Via = Literal["card", "phone"]
DAY_S = 86_400.0
HOUR_S = 3_600.0


class Opening(NamedTuple):
    """At ``at_s`` (seconds from the scenario's start) ``person`` opens ``door`` of
    ``building`` with their first card or their phone."""

    at_s: float
    person: str
    building: str
    door: str
    via: Via


_SORT_KEY = itemgetter(0, 1, 2, 3)
"""Openings sort by time, ties by person, building and door (and stay in draw order)."""
_TIME = itemgetter(0)


def openings(scenario: Scenario) -> list[Opening]:
    """Every opening of the scenario, in time order (see the module docstring)."""
    return _openings(scenario, _person_openings)


PersonDraw = Callable[[Scenario, Person, random.Random, float, list[float], float], list[Opening]]
"""Draws one person's openings: ``(scenario, person, rng, peak rate, keep, offset_s)``."""


def _openings(scenario: Scenario, person_draw: PersonDraw) -> list[Opening]:
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
        found += person_draw(scenario, person, rng, peak_rate, keep, offset_s)
    _in_time_order(found)
    return found


def _in_time_order(found: list[Opening]) -> None:
    """Sort by :data:`_SORT_KEY`, stably: by time alone first (float keys compare fast),
    then, only if two openings share a time, by the whole key."""
    found.sort(key=_TIME)
    if len(set(map(_TIME, found))) < len(found):
        found.sort(key=_SORT_KEY)


def _person_openings(
    scenario: Scenario,
    person: Person,
    rng: random.Random,
    peak_rate: float,
    keep: list[float],
    offset_s: float,
) -> list[Opening]:
    """One person's openings, in time order.

    Draws what :func:`_reference_person_openings` draws, number for number, from
    ``rng``'s primitives: ``expovariate(rate)`` is ``-log(1 - random()) / rate`` and
    ``randrange(n)`` is ``getrandbits(n.bit_length())`` until below ``n`` (CPython's
    ``Random._randbelow_with_getrandbits``); ``tests/test_traffic.py`` proves them equal.
    """
    found: list[Opening] = []
    doors = [(access.building, door) for access in person.access for door in access.doors]
    if not doors or not (person.cards or person.phone):
        return found
    phone_share = scenario.traffic.phone_share if person.phone else 0.0
    if not person.cards:
        phone_share = 1.0
    draw, bits, add = rng.random, rng.getrandbits, found.append
    count, width = len(doors), len(doors).bit_length()
    end, name = scenario.duration_s, person.name
    at = 0.0
    while True:
        at += -log(1.0 - draw()) / peak_rate
        if at >= end:
            return found
        # Draw every number whether or not it is kept, so one person's later openings do
        # not depend on which earlier candidates were thinned.
        thin, pick = draw(), bits(width)
        while pick >= count:
            pick = bits(width)
        phone = draw()
        if thin < keep[int((at + offset_s) // HOUR_S) % 24]:
            building, door = doors[pick]
            add(Opening(at, name, building, door, "phone" if phone < phone_share else "card"))


def _reference_person_openings(
    scenario: Scenario,
    person: Person,
    rng: random.Random,
    peak_rate: float,
    keep: list[float],
    offset_s: float,
) -> list[Opening]:
    """:func:`_person_openings` spelled with ``random.Random``'s distributions: the
    reference its draws are tested against."""
    doors = [(access.building, door) for access in person.access for door in access.doors]
    if not doors or not (person.cards or person.phone):
        return []
    phone_share = scenario.traffic.phone_share if person.phone else 0.0
    if not person.cards:
        phone_share = 1.0
    found: list[Opening] = []
    at = 0.0
    while True:
        at += rng.expovariate(peak_rate)
        if at >= scenario.duration_s:
            return found
        hour = int((at + offset_s) // HOUR_S) % 24
        thin, pick, phone = rng.random(), rng.randrange(len(doors)), rng.random()
        if thin < keep[hour]:
            building, door = doors[pick]
            via: Via = "phone" if phone < phone_share else "card"
            found.append(Opening(at, person.name, building, door, via))
