"""The typed form of a scenario file: frozen dataclasses, the error, the size caps.

Theory of operation
-------------------
A :class:`Scenario` is what ``doorsim`` runs: the world (portfolios, buildings with their
doors, people with their cards and access, managers), a traffic model, scripted events and
the run's duration and random seed. Everything here is plain data, already validated by
:mod:`simulators._scenario_build`: every name is unique where it must be, every reference
resolves, every number is in range. Door and person groups of the file (``count = N``) are
expanded here into one :class:`Door` / :class:`Person` each, so a runner never has to know
about groups. Times are seconds from the scenario's start (``at_s``), durations seconds
(``*_s``); :data:`Event` is a tagged union whose tag is each class's ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import ClassVar, Final

__all__ = [
    "Access",
    "Activate",
    "BleLinkLoss",
    "BrokerOutage",
    "Building",
    "ClockDrift",
    "CloudRestart",
    "Deactivate",
    "Door",
    "Event",
    "LostCard",
    "Manager",
    "Person",
    "PersonEvent",
    "PhoneOffline",
    "Portfolio",
    "PowerCut",
    "Scenario",
    "ScenarioError",
    "ScenarioLimits",
    "Traffic",
]

HOURS_PER_DAY: Final = 24


class ScenarioError(Exception):
    """A scenario file was refused: where (file and line) and why.

    ``str(error)`` is ``FILE:LINE: reason`` (``FILE: reason`` when no line applies, e.g.
    an unreadable file).
    """

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, kw_only=True)
class ScenarioLimits:
    """Caps on what one scenario may ask for (counts after groups are expanded)."""

    max_file_bytes: int = 4_000_000
    max_portfolios: int = 1_000
    max_buildings: int = 10_000
    max_doors: int = 100_000
    max_people: int = 1_000_000
    max_managers: int = 10_000
    max_cards_per_person: int = 16
    max_events: int = 100_000
    max_duration_s: float = 366 * 86_400.0
    max_name_length: int = 200
    max_openings_per_person_per_day: float = 1_000.0
    max_ble_range_m: float = 100.0
    max_clock_drift_ppm: float = 10_000.0
    max_clock_step_s: float = 7 * 86_400.0


@dataclass(frozen=True, kw_only=True)
class Portfolio:
    """A property-management portfolio: the unit a manager is responsible for."""

    name: str


@dataclass(frozen=True, kw_only=True)
class Door:
    """One lock. ``group`` is the name of the file's ``[[buildings.doors]]`` entry."""

    name: str
    group: str
    online: bool
    """True: on the internet (MQTT); False: reachable only over BLE from a phone."""
    ble_range_m: float


@dataclass(frozen=True, kw_only=True)
class Building:
    """A property in one portfolio, with its doors (groups expanded)."""

    name: str
    portfolio: str
    doors: tuple[Door, ...]

    @property
    def online_doors(self) -> int:
        return sum(door.online for door in self.doors)

    @property
    def offline_doors(self) -> int:
        return len(self.doors) - self.online_doors


@dataclass(frozen=True, kw_only=True)
class Access:
    """The doors of one building a person may open (names of single doors)."""

    building: str
    doors: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Person:
    """A resident: contact, keycards, whether they have the phone app, and their access."""

    name: str
    email: str
    cards: tuple[str, ...]
    cards_active: bool
    """Whether the cards are active when the scenario starts."""
    phone: bool
    """Whether the person has the app (a phone that opens doors and relays updates)."""
    access: tuple[Access, ...]


@dataclass(frozen=True, kw_only=True)
class Manager:
    """A manager who may act on behalf of people in the named portfolios."""

    name: str
    email: str
    portfolios: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Traffic:
    """How often doors are opened: per person per day, shaped by hour, by card or phone."""

    openings_per_person_per_day: float = 4.0
    phone_share: float = 0.5
    """Share of openings made with the phone app; the rest are card taps."""
    profile: tuple[float, ...] = (1.0,) * HOURS_PER_DAY
    """24 relative weights, one per hour of the day (index 0 = 00:00-01:00)."""

    @property
    def card_share(self) -> float:
        return 1.0 - self.phone_share

    def hour_shares(self) -> tuple[float, ...]:
        """The profile normalised to sum to 1: the share of a day's openings per hour."""
        total = sum(self.profile)
        return tuple(weight / total for weight in self.profile)


@dataclass(frozen=True, kw_only=True)
class PersonEvent:
    """Base of the events that change one person's card: who, which card, by whom."""

    at_s: float
    person: str
    card: str
    by: str | None
    """The manager who acts; None: the person acts themself (self-service)."""


@dataclass(frozen=True, kw_only=True)
class Activate(PersonEvent):
    """Activate a card (``by`` a manager, or the person with the code on the card)."""

    kind: ClassVar[str] = "activate"


@dataclass(frozen=True, kw_only=True)
class Deactivate(PersonEvent):
    """Deactivate a card."""

    kind: ClassVar[str] = "deactivate"


@dataclass(frozen=True, kw_only=True)
class LostCard(PersonEvent):
    """Report a card lost or stolen: revoke it everywhere, optionally issue a new one."""

    kind: ClassVar[str] = "lost_card"
    replace: bool


@dataclass(frozen=True, kw_only=True)
class BrokerOutage:
    """The MQTT broker is down from ``at_s`` for ``duration_s``, then restarts."""

    kind: ClassVar[str] = "broker_outage"
    at_s: float
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class PhoneOffline:
    """A person's phone has no internet from ``at_s`` for ``duration_s`` (BLE still works)."""

    kind: ClassVar[str] = "phone_offline"
    at_s: float
    person: str
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class PowerCut:
    """A lock loses power at ``at_s`` (mid-update if ``during_update``) for ``duration_s``."""

    kind: ClassVar[str] = "power_cut"
    at_s: float
    building: str
    door: str
    during_update: bool
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class ClockDrift:
    """A lock's clock runs fast or slow (``ppm``) and/or jumps by ``step_s`` at ``at_s``."""

    kind: ClassVar[str] = "clock_drift"
    at_s: float
    building: str
    door: str
    ppm: float
    step_s: float


@dataclass(frozen=True, kw_only=True)
class CloudRestart:
    """The cloud process restarts at ``at_s`` and is away for ``duration_s``: what it held
    in memory (bundle cache, unsent frames of its outbox drain) is lost; the database is not.
    """

    kind: ClassVar[str] = "cloud_restart"
    at_s: float
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class BleLinkLoss:
    """From ``at_s`` for ``duration_s``, every phone's BLE link to one door drops in the
    middle of a transfer (a bundle written to the lock, an audit batch read from it)."""

    kind: ClassVar[str] = "ble_link_loss"
    at_s: float
    building: str
    door: str
    duration_s: float


Event = (
    Activate
    | Deactivate
    | LostCard
    | BrokerOutage
    | PhoneOffline
    | PowerCut
    | ClockDrift
    | CloudRestart
    | BleLinkLoss
)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A whole scenario: the world, the traffic, the scripted events, duration and seed."""

    name: str
    description: str
    duration_s: float
    seed: int
    start: datetime
    """Wall-clock time of the scenario's second 0 (timezone-aware)."""
    portfolios: tuple[Portfolio, ...]
    buildings: tuple[Building, ...]
    people: tuple[Person, ...]
    managers: tuple[Manager, ...]
    traffic: Traffic
    events: tuple[Event, ...]
    """In time order; events at the same time keep the file's order."""

    @property
    def door_count(self) -> int:
        return sum(len(building.doors) for building in self.buildings)

    @property
    def online_door_count(self) -> int:
        return sum(building.online_doors for building in self.buildings)

    def starts_active(self, person: Person, card: str) -> bool:
        """Whether ``card`` of ``person`` is active when the scenario starts.

        The person's ``cards_active``, except for a card whose first event is an
        ``activate``: that card waits, inactive, for its activation (a spare card, or a
        new resident's card), so the event has something to do.
        """
        return person.cards_active and (person.name, card) not in self._activated_first

    @cached_property
    def _activated_first(self) -> frozenset[tuple[str, str]]:
        """``(person, card)`` whose first event is an ``activate`` (one pass over events,
        not one per card asked about)."""
        first: dict[tuple[str, str], PersonEvent] = {}
        for event in self.events:
            if isinstance(event, PersonEvent):
                first.setdefault((event.person, event.card), event)
        return frozenset(key for key, event in first.items() if isinstance(event, Activate))

    def building(self, name: str) -> Building:
        """The building called ``name`` (KeyError if there is none)."""
        for building in self.buildings:
            if building.name == name:
                return building
        raise KeyError(name)
