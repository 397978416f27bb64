"""A scenario's world at virtual time zero: the cloud database and commissioned locks.

Theory of operation: :func:`build_world` turns a :class:`~simulators.scenario.Scenario`
into what a fast run starts from. The cloud database (in-memory SQLite via
:func:`cloud.db.make_engine`) gets one row per portfolio, building (a property), door
(online or BLE only), manager (with the portfolios they manage), person (a person with the
app has used it before: ``used_app``), keycard and grant (one per door a person may open).
A person's cards are active for them when the scenario says they start active
(:meth:`~simulators.scenario.Scenario.starts_active`); otherwise they lie unassigned in
the inventory until an ``activate`` event. Each ``lost_card`` event with ``replace``
gets one more inventory card, its replacement. Every card has a printed activation code,
which self-service events type.

Each door gets a provisioned lock: a :class:`controller.runtime.LockRuntime`, the real
core bound to a :class:`controller.storage.Flash` on a :class:`~controller.storage.
MemoryMedium`, so a power cut can drop the lock's RAM and boot it again from what reached
flash. Its clock is the runner's ``lock_clock(index)``, the virtual time as that lock
reads it (drift and steps applied). Then every door is *commissioned*: the sync engine
computes its first list (:func:`cloud.sync.resync`), the installer carries the first
bundle in and the receipt out (:func:`cloud.sync.accept_receipt`). The doors are
registered offline until then and go online after it (an online door's first bundle
travels with the installer, not over MQTT: no MQTT bundle is sealed for it). All of this
happens before virtual time zero and counts toward no figure. Rows are written with
DB-API ``executemany`` inserts binding what Core's insert would (no ORM unit of work,
no per-row Core processing), and the :class:`~cloud.sync.
BundleCache` keeps every door's newest list (:func:`bundle_cache`), so changes do not
keep re-reading whole lists from the database.

Every key, id and code is derived from the scenario's seed and the thing's name
(:func:`simulators.fixture.fixed_bytes`), so a scenario always builds the same world.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Column, Dialect, Engine, ExecutionContext, Table, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from cloud.db import create_schema, make_engine, session_factory
from cloud.keys import ensure_key, key_of
from cloud.models import (
    Base,
    Door,
    Grant,
    Keycard,
    Manager,
    ManagerPortfolio,
    Person,
    Portfolio,
    Property,
)
from cloud.service import hash_code
from cloud.sql import Sql
from cloud.sync import BundleCache, door_bundle, receipt_on, resync
from controller.config import ControllerConfig
from controller.events import MQTT, FrameReceived, Send
from controller.identity import LockIdentity
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from protocol import Receipt, ReceiptStatus, decode_message
from simulators._scenario_model import LostCard, Scenario
from simulators.fixture import counting_random, fixed_bytes, seeded_random

__all__ = ["CardSpec", "DoorSpec", "PersonSpec", "ScenarioSetup", "build_world", "bundle_cache"]

FIRST_LIST_BATCH = 400
"""People per :func:`cloud.sync.resync` when the first lists are computed."""
Rows = list[dict[str, Any]]
LockClock = Callable[[int], Callable[[], float]]
"""Given a door's index, the clock its lock reads."""


@dataclass(frozen=True)
class DoorSpec:
    """One door: where it is, its ids, whether it is online."""

    index: int
    building: str
    name: str
    id: str
    online: bool

    @property
    def id_bytes(self) -> bytes:
        return bytes.fromhex(self.id)

    @property
    def label(self) -> str:
        return f"{self.building}/{self.name}"


@dataclass(frozen=True)
class CardSpec:
    """One keycard: its scenario name, uid, secret key and printed activation code."""

    name: str
    uid: str
    key: bytes
    code: str

    @cached_property
    def uid_bytes(self) -> bytes:
        """The uid as the reader reads it (parsed once: a card is tapped many times)."""
        return bytes.fromhex(self.uid)


@dataclass
class PersonSpec:
    """One person: ids, the cards of the scenario, the doors they may open."""

    index: int
    name: str
    id: str
    cards: list[CardSpec]
    phone: bool
    doors: list[int]


@dataclass
class ScenarioSetup:
    """What :func:`build_world` made (see the module docstring)."""

    engine: Engine
    sessions: sessionmaker[Session]
    cache: BundleCache
    cloud_random: Callable[[int], bytes]
    cloud_public: bytes
    wall_t0: int
    """Unix time of virtual time zero (the scenario's ``start``)."""
    doors: list[DoorSpec]
    door_at: dict[tuple[str, str], int]
    people: list[PersonSpec]
    person_at: dict[str, int]
    managers: dict[str, str]
    """Manager name → id."""
    locks: list[LockRuntime]
    replacements: list[CardSpec] = field(default_factory=list)
    """Inventory cards for ``lost_card`` events with ``replace``, in event order."""


def _ids(scenario: Scenario) -> Callable[[str], str]:
    return lambda what: fixed_bytes(f"scenario {scenario.seed} {what}", 16).hex()


def _card(scenario: Scenario, name: str) -> CardSpec:
    label = f"scenario {scenario.seed} card {name}"
    code = fixed_bytes(f"{label} code", 5).hex().upper()
    return CardSpec(name, fixed_bytes(label, 7).hex(), fixed_bytes(f"{label} key", 16), code)


def bundle_cache(doors: int) -> BundleCache:
    """A cloud process's bundle cache, with room for every door's newest list."""
    return BundleCache(list_limit=max(256, doors))


def lock_config() -> ControllerConfig:
    """The reference lock, with a store big enough for a building's entrance door."""
    return ControllerConfig(capacity=20_000, audit_capacity=1_000_000, snapshot_every=1_024)


def build_world(scenario: Scenario, lock_clock: LockClock) -> ScenarioSetup:
    """A seeded cloud database and commissioned locks (see the module docstring)."""
    ident = _ids(scenario)
    engine = make_engine("sqlite://")
    create_schema(engine)
    sessions = session_factory(engine)
    cloud_random = counting_random(f"scenario {scenario.seed} cloud")
    doors = _doors(scenario, ident)
    door_at = {(d.building, d.name): d.index for d in doors}
    people = _people(scenario, ident, door_at)
    managers = {m.name: ident(f"manager {m.name}") for m in scenario.managers}
    replacements = [
        _card(scenario, f"replacement {n} of {event.card}")
        for n, event in enumerate(e for e in scenario.events if isinstance(e, LostCard))
        if event.replace
    ]
    cache = bundle_cache(len(doors))
    identities = [_identity(scenario, door, ident) for door in doors]
    with sessions.begin() as session:
        seed = fixed_bytes(f"scenario {scenario.seed} cloud key")
        key = ensure_key(session, cloud_random, seed=seed)
        _world_rows(session, scenario, ident, doors, identities, managers)
        _people_rows(session, scenario, people, replacements, ident, doors)
        _first_lists(session, [p.id for p in people], cloud_random, cache)
        online = [door.id for door in doors if door.online]
        if online:  # the doors go online once the installer has commissioned them
            session.execute(update(Door).where(Door.id.in_(online)).values(online=True))
    wall_t0 = int(scenario.start.timestamp())
    config = lock_config()
    locks = [
        _provision(scenario, identity, key.public, config, lock_clock(n), wall_t0)
        for n, identity in enumerate(identities)
    ]
    _commission(sessions, cache, cloud_random, doors, locks)
    person_at = {p.name: p.index for p in people}
    return ScenarioSetup(
        engine, sessions, cache, cloud_random, key.public, wall_t0, doors, door_at, people,
        person_at, managers, locks, replacements,
    )  # fmt: skip


def _doors(scenario: Scenario, ident: Callable[[str], str]) -> list[DoorSpec]:
    found: list[DoorSpec] = []
    for building in scenario.buildings:
        for door in building.doors:
            door_id = ident(f"door {building.name}/{door.name}")
            found.append(DoorSpec(len(found), building.name, door.name, door_id, door.online))
    return found


def _people(
    scenario: Scenario, ident: Callable[[str], str], door_at: dict[tuple[str, str], int]
) -> list[PersonSpec]:
    return [
        PersonSpec(
            index=n,
            name=person.name,
            id=ident(f"person {person.name}"),
            cards=[_card(scenario, card) for card in person.cards],
            phone=person.phone,
            doors=[door_at[(a.building, d)] for a in person.access for d in a.doors],
        )
        for n, person in enumerate(scenario.people)
    ]


def _identity(scenario: Scenario, door: DoorSpec, ident: Callable[[str], str]) -> LockIdentity:
    label = f"scenario {scenario.seed} lock {door.label}"
    return LockIdentity.generate(
        door_id=door.id_bytes,
        property_id=bytes.fromhex(ident(f"building {door.building}")),
        doorcode_secret=fixed_bytes(f"{label} code"),
        random=counting_random(label),
    )


def _world_rows(
    session: Session,
    scenario: Scenario,
    ident: Callable[[str], str],
    doors: list[DoorSpec],
    identities: list[LockIdentity],
    managers: dict[str, str],
) -> None:
    for portfolio in scenario.portfolios:
        session.add(Portfolio(id=ident(f"portfolio {portfolio.name}"), name=portfolio.name))
    for building in scenario.buildings:
        session.add(
            Property(
                id=ident(f"building {building.name}"),
                portfolio_id=ident(f"portfolio {building.portfolio}"),
                name=building.name,
            )
        )
    for manager in scenario.managers:
        session.add(Manager(id=managers[manager.name], name=manager.name, email=manager.email))
    session.flush()
    for manager in scenario.managers:
        for name in manager.portfolios:
            session.add(
                ManagerPortfolio(
                    manager_id=managers[manager.name], portfolio_id=ident(f"portfolio {name}")
                )
            )
    rows = [
        {
            "id": door.id,
            "property_id": ident(f"building {door.building}"),
            "name": door.name,
            "online": False,  # until commissioned (see build_world)
            "identity_public": identity.identity_public,
            "sealing_public": identity.sealing_public,
            "doorcode_secret": identity.doorcode_secret,
        }
        for door, identity in zip(doors, identities, strict=True)
    ]
    _insert(session, Door, rows)


def _people_rows(
    session: Session,
    scenario: Scenario,
    people: list[PersonSpec],
    replacements: list[CardSpec],
    ident: Callable[[str], str],
    doors: list[DoorSpec],
) -> None:
    rows = [
        {"id": p.id, "name": p.name, "email": person.email, "used_app": p.phone}
        for p, person in zip(people, scenario.people, strict=True)
    ]
    if rows:
        _insert(session, Person, rows)
    cards = [
        _card_row(card, p.id if scenario.starts_active(person, card.name) else None)
        for p, person in zip(people, scenario.people, strict=True)
        for card in p.cards
    ]
    cards += [_card_row(card, None) for card in replacements]
    if cards:
        _insert(session, Keycard, cards)
    grants = [
        {"id": ident(f"grant {p.name} {doors[d].label}"), "person_id": p.id, "door_id": doors[d].id}
        for p in people
        for d in p.doors
    ]
    if grants:
        _insert(session, Grant, grants)


def _insert(session: Session, model: type[Base], rows: Rows) -> None:
    """One DB-API ``executemany`` of what a Core ``insert`` of ``rows`` binds: the rows'
    columns and every other column with a default, each value through its type's bind
    processor. (Core's insert costs several times more per row, the ORM's more still;
    ``tests/test_scenario_setup.py`` proves both store the same rows.)"""
    table = cast(Table, model.__table__)
    dialect = session.get_bind().dialect
    given = set(rows[0])
    columns = [c for c in table.columns if c.name in given or c.default is not None]
    values = [_column_values(column, column.name in given, rows, dialect) for column in columns]
    statement = (
        f"INSERT INTO {table.name} ({', '.join(c.name for c in columns)})"
        f" VALUES ({', '.join('?' * len(columns))})"
    )
    session.connection().exec_driver_sql(statement, list(zip(*values, strict=True)))


def _column_values(column: Column[Any], given: bool, rows: Rows, dialect: Dialect) -> list[Any]:
    """One column's bound values for ``rows``: given, or the column's default (a callable
    default, as the models' ``list``, is called once: it makes equal values)."""
    process = column.type.bind_processor(dialect)
    default = column.default
    if given:
        found = list(map(itemgetter(column.name), rows))
        return found if process is None else list(map(process, found))
    if isinstance(default, ScalarElementColumnDefault):
        value = default.arg
    elif isinstance(default, CallableColumnDefault):
        value = default.arg(cast(ExecutionContext, None))  # the models' take no context
    else:
        raise TypeError(f"no value for {column.name}: {default!r} is not a Python default")
    return [value if process is None else process(value)] * len(rows)


def _card_row(card: CardSpec, holder: str | None) -> dict[str, object]:
    """A keycard active for ``holder``, or (None) unassigned in the inventory."""
    return {
        "uid": card.uid,
        "card_key": card.key,
        "activation_code_hash": hash_code(card.code),
        "person_id": holder,
        "state": "inventory" if holder is None else "active",
    }


def _first_lists(
    session: Session,
    person_ids: list[str],
    cloud_random: Callable[[int], bytes],
    cache: BundleCache,
) -> None:
    """The sync engine computes every door's first list (the installer carries it)."""
    with Sql(session) as sql:
        for start in range(0, len(person_ids), FIRST_LIST_BATCH):
            batch = person_ids[start : start + FIRST_LIST_BATCH]
            resync(sql, batch, key=key_of(sql), random=cloud_random, cache=cache)


def _provision(
    scenario: Scenario,
    identity: LockIdentity,
    cloud_public: bytes,
    config: ControllerConfig,
    clock: Callable[[], float],
    wall_t0: int,
) -> LockRuntime:
    label = f"scenario {scenario.seed} rt {identity.door_id.hex()}"
    return LockRuntime.provision(
        Flash(MemoryMedium()),
        identity,
        cloud_public,
        config=config,
        clock=clock,
        wall_time=wall_t0,
        random=seeded_random(label),
    )


def _commission(
    sessions: sessionmaker[Session],
    cache: BundleCache,
    cloud_random: Callable[[int], bytes],
    doors: list[DoorSpec],
    locks: list[LockRuntime],
) -> None:
    """The installer carries each door's first bundle in and its receipt out.

    One transaction on raw statements: :func:`~cloud.sync.door_bundle` and
    :func:`~cloud.sync.receipt_on` are what :func:`~cloud.sync.bundle_frame` and
    :func:`~cloud.sync.accept_receipt` run, without an ORM door look-up, a flush and an
    expiry of the whole session per door (with thousands of doors the expiries cost more
    than the bundles)."""
    with sessions.begin() as session:
        key = ensure_key(session, cloud_random)
        with Sql(session) as sql:
            rows = sql.rows("SELECT id, sealing_public, list_version FROM door")
            found = {door_id: (bytes(sealing), version) for door_id, sealing, version in rows}
            for spec, lock in zip(doors, locks, strict=True):
                sealing, version = found[spec.id]
                if version == 0:
                    continue  # nobody may open it yet: it starts empty, as from the factory
                frame = door_bundle(
                    sql, spec.id, sealing, 0, version, key=key, random=cloud_random, cache=cache
                )
                receipt_on(sql, spec.id, _first_receipt(spec, lock, frame))


def _first_receipt(spec: DoorSpec, lock: LockRuntime, frame: bytes) -> bytes:
    """The lock applies its first bundle; its receipt, which must say OK."""
    actions = lock.handle(FrameReceived(MQTT, frame))
    receipts = [
        m
        for a in actions
        if isinstance(a, Send) and isinstance(m := decode_message(a.frame), Receipt)
    ]
    if not receipts or receipts[0].status is not ReceiptStatus.OK:
        raise RuntimeError(f"door {spec.label} refused its first list")
    return receipts[0].to_bytes()
