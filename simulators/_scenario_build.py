"""From a parsed TOML document to a validated :class:`~simulators._scenario_model.Scenario`.

Theory of operation
-------------------
:func:`build_scenario` reads the document top-down in the order a reader of the file
would check it: ``[scenario]`` (duration first, since every event time is checked against
it), ``[[portfolios]]``, ``[[buildings]]`` with their ``[[buildings.doors]]`` groups,
``[[managers]]``, ``[[people]]`` (whose access names buildings and doors), ``[traffic]``
and ``[[events]]`` (which name people, cards, managers and doors). Each table is read
through :class:`~simulators._scenario_fields.Table`, which refuses unknown keys, wrong
types and out-of-range numbers at the offending key's line. What this module adds are the
checks across tables: unique names, references that resolve, and the caps on the expanded
counts of doors and people. The first problem found is raised; nothing is half-built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from ._scenario_fields import MISSING, Context, Table, format_duration
from ._scenario_lines import Path
from ._scenario_model import (
    HOURS_PER_DAY,
    Access,
    Activate,
    BleLinkLoss,
    BrokerOutage,
    Building,
    ClockDrift,
    CloudRestart,
    Deactivate,
    Door,
    Event,
    LostCard,
    Manager,
    Person,
    PhoneOffline,
    Portfolio,
    PowerCut,
    Scenario,
    Traffic,
)

__all__ = ["DEFAULT_PORTFOLIO", "DEFAULT_START", "build_scenario"]

DEFAULT_START: Final = datetime(2026, 1, 5, tzinfo=UTC)
"""A Monday, midnight UTC."""
DEFAULT_PORTFOLIO: Final = "Default portfolio"
"""The portfolio of every building when the file defines none."""

_TOP: Final = ("scenario", "portfolios", "buildings", "managers", "people", "traffic", "events")
_SCENARIO: Final = ("name", "description", "duration", "seed", "start")
_PORTFOLIO: Final = ("name",)
_BUILDING: Final = ("name", "portfolio", "doors")
_DOORS: Final = ("name", "count", "online", "ble_range_m")
_MANAGER: Final = ("name", "email", "portfolios")
_PERSON: Final = ("name", "count", "email", "cards", "cards_active", "phone", "access")
_ACCESS: Final = ("building", "doors", "one_of")
_TRAFFIC: Final = ("openings_per_person_per_day", "phone_share", "profile")
_EVENT_COMMON: Final = ("at", "kind")
_PERSON_EVENT: Final = (*_EVENT_COMMON, "person", "card", "by")
_DOOR_EVENT: Final = (*_EVENT_COMMON, "building", "door")
_EVENT_KEYS: Final = {
    "activate": _PERSON_EVENT,
    "deactivate": _PERSON_EVENT,
    "lost_card": (*_PERSON_EVENT, "replace"),
    "broker_outage": (*_EVENT_COMMON, "duration"),
    "phone_offline": (*_EVENT_COMMON, "person", "duration"),
    "power_cut": (*_DOOR_EVENT, "during_update", "duration"),
    "clock_drift": (*_DOOR_EVENT, "ppm", "step"),
    "cloud_restart": (*_EVENT_COMMON, "duration"),
    "ble_link_loss": (*_DOOR_EVENT, "duration"),
}
_ALL_EVENT_KEYS: Final = frozenset(key for keys in _EVENT_KEYS.values() for key in keys)
_MAX_SEED: Final = 2**63 - 1
_DEFAULT_POWER_CUT_S: Final = 60.0
_DEFAULT_CLOUD_RESTART_S: Final = 30.0


def _listing(names: Iterator[str] | list[str], limit: int = 8) -> str:
    """Some of ``names`` for a message: ``"a", "b", ... (12 in all)``."""
    items = list(names)
    shown = ", ".join(f'"{name}"' for name in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "") or "none"


@dataclass
class _DoorIndex:
    """One building's door names and group names, each to the single doors it means."""

    doors: list[Door] = field(default_factory=list)
    by_name: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(self, table: Table, group: str, names: list[str]) -> None:
        if group in self.by_name:
            table.fail("name", f'a door or door group "{group}" is already in this building')
        for name in names:
            if name in self.by_name and name != group:
                table.fail(
                    "name", f'door "{name}" of group "{group}" clashes with another door name'
                )
        self.by_name[group] = tuple(names)
        for name in names:
            self.by_name[name] = (name,)


@dataclass(frozen=True)
class _AccessRule:
    """One access entry: doors every person of a group shares, plus one door of ``one_of``
    per person in turn (person k gets door k mod n)."""

    shared: Access
    one_of: tuple[str, ...]

    def for_person(self, number: int) -> Access:
        if not self.one_of:
            return self.shared
        own = self.one_of[number % len(self.one_of)]
        doors = self.shared.doors if own in self.shared.doors else (*self.shared.doors, own)
        return Access(building=self.shared.building, doors=doors)


@dataclass
class _Builder:
    """The cross-table state of one build: what is defined so far."""

    ctx: Context
    duration_s: float = 0.0
    portfolios: dict[str, Portfolio] = field(default_factory=dict)
    buildings: dict[str, Building] = field(default_factory=dict)
    door_index: dict[str, _DoorIndex] = field(default_factory=dict)
    managers: dict[str, Manager] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    card_owner: dict[str, str] = field(default_factory=dict)
    door_count: int = 0

    # --- world --------------------------------------------------------------------------

    def portfolio_list(self, top: Table) -> None:
        for table in top.tables(
            "portfolios", _PORTFOLIO, "[[portfolios]]", self.ctx.limits.max_portfolios
        ):
            name = table.name()
            if name in self.portfolios:
                table.fail("name", f'portfolio "{name}" is defined twice')
            self.portfolios[name] = Portfolio(name=name)

    def building_list(self, top: Table) -> None:
        limit = self.ctx.limits.max_buildings
        for table in top.tables("buildings", _BUILDING, "[[buildings]]", limit):
            building = self.building(table)
            self.buildings[building.name] = building
        if not self.buildings:
            top.fail("buildings", "a scenario needs at least one [[buildings]] entry")

    def building(self, table: Table) -> Building:
        name = table.name()
        if name in self.buildings:
            table.fail("name", f'building "{name}" is defined twice')
        portfolio = self.portfolio_of(table)
        index = _DoorIndex()
        limit = self.ctx.limits.max_doors
        for group in table.tables("doors", _DOORS, "[[buildings.doors]]", limit):
            self.door_group(group, index)
        if not index.doors:
            table.fail("name", f'building "{name}" needs at least one [[buildings.doors]] entry')
        self.door_index[name] = index
        return Building(name=name, portfolio=portfolio, doors=tuple(index.doors))

    def portfolio_of(self, table: Table) -> str:
        if not self.portfolios:
            if table.has("portfolio"):
                table.fail("portfolio", "no [[portfolios]] are defined; define the portfolio first")
            return DEFAULT_PORTFOLIO
        only = next(iter(self.portfolios)) if len(self.portfolios) == 1 else MISSING
        name = table.name("portfolio", only)
        if name not in self.portfolios:
            known = _listing(list(self.portfolios))
            table.fail("portfolio", f'portfolio "{name}" is not defined (portfolios: {known})')
        return name

    def door_group(self, table: Table, index: _DoorIndex) -> None:
        limits = self.ctx.limits
        group = table.name()
        count = table.integer("count", 1, 1, limits.max_doors)
        online = table.flag("online", False)
        ble_range_m = table.number("ble_range_m", 10.0, 0.1, limits.max_ble_range_m)
        self.door_count += count
        if self.door_count > limits.max_doors:
            table.fail(
                "count",
                f"the scenario would have {self.door_count:,} doors; "
                f"at most {limits.max_doors:,} are allowed",
            )
        names = [group] if count == 1 else [f"{group} {i}" for i in range(1, count + 1)]
        index.add(table, group, names)
        for name in names:
            index.doors.append(Door(name=name, group=group, online=online, ble_range_m=ble_range_m))

    def manager_list(self, top: Table) -> None:
        for table in top.tables("managers", _MANAGER, "[[managers]]", self.ctx.limits.max_managers):
            name = table.name()
            if name in self.managers:
                table.fail("name", f'manager "{name}" is defined twice')
            email = table.text("email", _email(name))
            portfolios = table.names("portfolios")
            for i, portfolio in enumerate(portfolios):
                if portfolio not in self.portfolios:
                    known = _listing(list(self.portfolios))
                    self.ctx.fail(
                        (*table.path, "portfolios", i),
                        f'portfolio "{portfolio}" is not defined (portfolios: {known})',
                    )
            self.managers[name] = Manager(name=name, email=email, portfolios=tuple(portfolios))

    def person_list(self, top: Table) -> None:
        for table in top.tables("people", _PERSON, "[[people]]", self.ctx.limits.max_people):
            self.person_group(table)

    def person_group(self, table: Table) -> None:
        limits = self.ctx.limits
        group = table.name()
        count = table.integer("count", 1, 1, limits.max_people)
        if len(self.people) + count > limits.max_people:
            table.fail(
                "count",
                f"the scenario would have {len(self.people) + count:,} people; "
                f"at most {limits.max_people:,} are allowed",
            )
        if count > 1 and (table.has("cards") or table.has("email")):
            key = "cards" if table.has("cards") else "email"
            table.fail(
                key,
                f'"{key}" can be given only for one person (count = 1); '
                "each person of a group gets their own",
            )
        names = [group] if count == 1 else [f"{group} {i}" for i in range(1, count + 1)]
        rules = self.access_list(table)
        cards_active = table.flag("cards_active", True)
        phone = table.flag("phone", True)
        email = table.text("email", _email(group))
        for number, name in enumerate(names):
            if name in self.people:
                table.fail("name", f'person "{name}" is defined twice')
            cards = self.cards_of(table, name, default_only=count > 1)
            self.people[name] = Person(
                name=name,
                email=email if count == 1 else _email(name),
                cards=cards,
                cards_active=cards_active,
                phone=phone,
                access=tuple(rule.for_person(number) for rule in rules),
            )

    def cards_of(self, table: Table, person: str, *, default_only: bool) -> tuple[str, ...]:
        default = [f"{person} card"]
        cards = default if default_only else table.names("cards", default)
        if not 1 <= len(cards) <= self.ctx.limits.max_cards_per_person:
            table.fail(
                "cards", f'"cards" must name 1 to {self.ctx.limits.max_cards_per_person} cards'
            )
        for i, card in enumerate(cards):
            owner = self.card_owner.get(card)
            if owner is not None:
                self.ctx.fail(
                    (*table.path, "cards", i), f'card "{card}" already belongs to "{owner}"'
                )
            self.card_owner[card] = person
        return tuple(cards)

    def access_list(self, table: Table) -> list[_AccessRule]:
        value = table.raw("access", [], "an array of { building = ..., doors = [...] }")
        if not isinstance(value, list):
            table.wrong("access", "an array of { building = ..., doors = [...] }", value)
        seen: set[str] = set()
        out = []
        for i, item in enumerate(value):
            entry = self.ctx.table(item, (*table.path, "access", i), _ACCESS, "an access entry")
            rule = self.access_rule(entry)
            if rule.shared.building in seen:
                entry.fail("building", f'building "{rule.shared.building}" appears twice')
            seen.add(rule.shared.building)
            out.append(rule)
        return out

    def access_rule(self, entry: Table) -> _AccessRule:
        building = self.building_ref(entry)
        index = self.door_index[building]
        if not entry.has("doors") and not entry.has("one_of"):
            every = tuple(door.name for door in index.doors)
            return _AccessRule(Access(building=building, doors=every), ())
        doors: dict[str, None] = {}
        for i, name in enumerate(entry.names("doors", [])):
            doors.update(dict.fromkeys(self.door_names(entry, building, name, ("doors", i))))
        one_of: tuple[str, ...] = ()
        if entry.has("one_of"):
            one_of = self.door_names(entry, building, entry.name("one_of"), ("one_of",))
        return _AccessRule(Access(building=building, doors=tuple(doors)), one_of)

    def door_names(self, entry: Table, building: str, name: str, at: Path) -> tuple[str, ...]:
        """The single doors a door or group name of ``building`` means."""
        doors = self.door_index[building].by_name.get(name)
        if doors is None:
            known = _listing(list(self.door_index[building].by_name))
            self.ctx.fail(
                (*entry.path, *at),
                f'building "{building}" has no door or door group "{name}" (doors: {known})',
            )
        return doors

    def building_ref(self, table: Table) -> str:
        name = table.name("building")
        if name not in self.buildings:
            known = _listing(list(self.buildings))
            table.fail("building", f'building "{name}" is not defined (buildings: {known})')
        return name

    def door_ref(self, table: Table) -> tuple[str, str]:
        building = self.building_ref(table)
        name = table.name("door")
        doors = self.door_index[building].by_name.get(name)
        if doors is None or len(doors) != 1:
            what = (
                f'is a group of {len(doors)} doors; name one, e.g. "{doors[0]}"'
                if doors
                else "is not defined"
            )
            table.fail("door", f'door "{name}" of building "{building}" {what}')
        return building, doors[0]

    # --- traffic and events -------------------------------------------------------------

    def traffic(self, top: Table) -> Traffic:
        table = top.sub("traffic", _TRAFFIC, "[traffic]")
        most = self.ctx.limits.max_openings_per_person_per_day
        openings = table.number(
            "openings_per_person_per_day", Traffic.openings_per_person_per_day, 0.0, most
        )
        phone_share = table.number("phone_share", Traffic.phone_share, 0.0, 1.0)
        profile = table.raw("profile", list(Traffic.profile), "24 weights")
        expected = f"an array of {HOURS_PER_DAY} weights, one per hour of the day"
        if not isinstance(profile, list):
            table.wrong("profile", expected, profile)
        if len(profile) != HOURS_PER_DAY:
            table.fail("profile", f'"profile" must be {expected}; it has {len(profile)}')
        sub = Table(self.ctx, {}, (*table.path, "profile"), frozenset(), '"profile"')
        weights = tuple(sub.check_number(i, weight, 0.0, 1e9) for i, weight in enumerate(profile))
        if not any(weights):
            table.fail("profile", '"profile" must have at least one weight above 0')
        return Traffic(
            openings_per_person_per_day=openings, phone_share=phone_share, profile=weights
        )

    def events(self, top: Table) -> tuple[Event, ...]:
        tables = top.tables("events", _ALL_EVENT_KEYS, "[[events]]", self.ctx.limits.max_events)
        events = [self.event(table) for table in tables]
        return tuple(sorted(events, key=lambda event: event.at_s))

    def event(self, table: Table) -> Event:
        kind = table.text("kind")
        if kind not in _EVENT_KEYS:
            table.fail(
                "kind", f'unknown event kind "{kind}" (kinds: {_listing(list(_EVENT_KEYS))})'
            )
        allowed = _EVENT_KEYS[kind]
        table = self.ctx.table(table.data, table.path, allowed, f'an event of kind "{kind}"')
        at_s = table.time("at", self.duration_s)
        return _EVENT_READERS[kind](self, table, at_s)

    def end_within(self, table: Table, at_s: float, duration_s: float) -> None:
        if at_s + duration_s > self.duration_s:
            span = f"from {format_duration(at_s)} to {format_duration(at_s + duration_s)}"
            end = format_duration(self.duration_s)
            table.fail(
                "duration",
                f"it lasts {span}, past the end of the scenario ({end}); "
                "shorten it or start it earlier",
            )

    def person_ref(self, table: Table) -> Person:
        name = table.name("person")
        person = self.people.get(name)
        if person is None:
            table.fail(
                "person", f'person "{name}" is not defined (people: {_listing(list(self.people))})'
            )
        return person

    def person_event(self, table: Table, at_s: float) -> tuple[str, str, str | None]:
        person = self.person_ref(table)
        card = table.name("card", person.cards[0])
        if card not in person.cards:
            table.fail(
                "card",
                f'"{person.name}" has no card "{card}" (cards: {_listing(list(person.cards))})',
            )
        by = table.name("by", None) if table.has("by") else None
        if by is not None and by not in self.managers:
            table.fail(
                "by", f'manager "{by}" is not defined (managers: {_listing(list(self.managers))})'
            )
        return person.name, card, by


def _activate(builder: _Builder, table: Table, at_s: float) -> Event:
    person, card, by = builder.person_event(table, at_s)
    return Activate(at_s=at_s, person=person, card=card, by=by)


def _deactivate(builder: _Builder, table: Table, at_s: float) -> Event:
    person, card, by = builder.person_event(table, at_s)
    return Deactivate(at_s=at_s, person=person, card=card, by=by)


def _lost_card(builder: _Builder, table: Table, at_s: float) -> Event:
    person, card, by = builder.person_event(table, at_s)
    replace = table.flag("replace", True)
    return LostCard(at_s=at_s, person=person, card=card, by=by, replace=replace)


def _broker_outage(builder: _Builder, table: Table, at_s: float) -> Event:
    duration_s = table.duration("duration", MISSING)
    builder.end_within(table, at_s, duration_s)
    return BrokerOutage(at_s=at_s, duration_s=duration_s)


def _phone_offline(builder: _Builder, table: Table, at_s: float) -> Event:
    person = builder.person_ref(table)
    if not person.phone:
        table.fail("person", f'"{person.name}" has no phone (phone = false in [[people]])')
    duration_s = table.duration("duration", MISSING)
    builder.end_within(table, at_s, duration_s)
    return PhoneOffline(at_s=at_s, person=person.name, duration_s=duration_s)


def _power_cut(builder: _Builder, table: Table, at_s: float) -> Event:
    building, door = builder.door_ref(table)
    during_update = table.flag("during_update", False)
    duration_s = table.duration("duration", _DEFAULT_POWER_CUT_S)
    builder.end_within(table, at_s, duration_s)
    return PowerCut(
        at_s=at_s, building=building, door=door, during_update=during_update, duration_s=duration_s
    )


def _clock_drift(builder: _Builder, table: Table, at_s: float) -> Event:
    limits = builder.ctx.limits
    building, door = builder.door_ref(table)
    ppm = table.number("ppm", 0.0, -limits.max_clock_drift_ppm, limits.max_clock_drift_ppm)
    step_s = table.duration("step", 0.0, signed=True)
    if abs(step_s) > limits.max_clock_step_s:
        table.fail(
            "step", f'"step" must be at most {format_duration(limits.max_clock_step_s)} either way'
        )
    if ppm == 0 and step_s == 0:
        table.fail("kind", 'a "clock_drift" event needs "ppm" (a rate) or "step" (a jump), or both')
    return ClockDrift(at_s=at_s, building=building, door=door, ppm=ppm, step_s=step_s)


def _cloud_restart(builder: _Builder, table: Table, at_s: float) -> Event:
    duration_s = table.duration("duration", _DEFAULT_CLOUD_RESTART_S)
    builder.end_within(table, at_s, duration_s)
    return CloudRestart(at_s=at_s, duration_s=duration_s)


def _ble_link_loss(builder: _Builder, table: Table, at_s: float) -> Event:
    building, door = builder.door_ref(table)
    duration_s = table.duration("duration", MISSING)
    builder.end_within(table, at_s, duration_s)
    return BleLinkLoss(at_s=at_s, building=building, door=door, duration_s=duration_s)


_EVENT_READERS: Final[dict[str, Callable[[_Builder, Table, float], Event]]] = {
    "activate": _activate,
    "deactivate": _deactivate,
    "lost_card": _lost_card,
    "broker_outage": _broker_outage,
    "phone_offline": _phone_offline,
    "power_cut": _power_cut,
    "clock_drift": _clock_drift,
    "cloud_restart": _cloud_restart,
    "ble_link_loss": _ble_link_loss,
}


def _email(name: str) -> str:
    local = ".".join(part.lower() for part in name.split() if part.isalnum()) or "someone"
    return f"{local}@example.com"


def build_scenario(document: dict[str, object], ctx: Context) -> Scenario:
    """Validate a parsed scenario document; raise ScenarioError at the first problem."""
    top = ctx.table(document, (), _TOP, "the scenario file")
    head = top.sub("scenario", _SCENARIO, "[scenario]")
    if not top.has("scenario"):
        ctx.fail((), 'a scenario file needs a [scenario] table with "name" and "duration"')
    builder = _Builder(ctx)
    name = head.name()
    description = head.text("description", "")
    builder.duration_s = head.duration("duration", MISSING)
    if builder.duration_s > ctx.limits.max_duration_s:
        head.fail(
            "duration", f'"duration" must be at most {format_duration(ctx.limits.max_duration_s)}'
        )
    seed = head.integer("seed", 0, 0, _MAX_SEED)
    start = head.moment("start", DEFAULT_START)
    builder.portfolio_list(top)
    builder.building_list(top)
    builder.manager_list(top)
    builder.person_list(top)
    traffic = builder.traffic(top)
    events = builder.events(top)
    portfolios = builder.portfolios or {DEFAULT_PORTFOLIO: Portfolio(name=DEFAULT_PORTFOLIO)}
    return Scenario(
        name=name,
        description=description,
        duration_s=builder.duration_s,
        seed=seed,
        start=start,
        portfolios=tuple(portfolios.values()),
        buildings=tuple(builder.buildings.values()),
        people=tuple(builder.people.values()),
        managers=tuple(builder.managers.values()),
        traffic=traffic,
        events=events,
    )
