"""The building a fast run simulates: its configuration and its first state.

Theory of operation: :class:`BuildingConfig` says how many online and offline doors,
residents, phones and openings there are, which changes happen when, and how the
networks behave. :func:`build` turns it into a cloud database (in-memory SQLite via
:func:`cloud.db.make_engine`) and one provisioned :class:`~controller.core.Controller`
per door, then *commissions* every door: the sync engine
(:func:`cloud.sync.resync`) computes each door's first list, the installer carries the
first bundle to the lock (:func:`cloud.sync.bundle_frame`) and the lock's receipt back
(:func:`cloud.sync.accept_receipt`). Commissioning happens before virtual time zero
and counts toward no figure.

The layout: one portfolio, one property, one manager. Door 0 is the online main
entrance every resident opens; each resident may also open ``doors_per_person - 1``
other doors drawn at random. Every resident holds one active keycard; spare cards
wait in the inventory for scripted activations and replacements. Every key, id and
draw is derived from ``seed`` (:func:`simulators.fixture.fixed_bytes`,
``random.Random``), so a seed always builds the same building.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import create_schema, make_engine, session_factory
from cloud.keys import ensure_key, key_of
from cloud.models import (
    Door,
    Grant,
    Keycard,
    Manager,
    ManagerPortfolio,
    MqttOutbox,
    Person,
    Portfolio,
    Property,
)
from cloud.service import hash_code
from cloud.sql import Sql
from cloud.sync import BundleCache, accept_receipt, bundle_frame, resync
from controller.config import ControllerConfig
from controller.core import Controller
from controller.events import MQTT, FrameReceived, Send
from controller.identity import LockIdentity
from protocol import Receipt, ReceiptStatus, decode_message
from simulators.fixture import counting_random, fixed_bytes

from .net import BleModel, MqttModel

__all__ = [
    "RESIDENTIAL",
    "BuildingConfig",
    "ChangeKind",
    "Inventory",
    "ScriptedChange",
    "Setup",
    "build",
]

T0 = 1_800_000_000
"""Unix time at virtual time zero."""

ChangeKind = Literal["activate", "deactivate", "lost"]

RESIDENTIAL: tuple[float, ...] = (
    *(0.1,) * 6,
    0.6,
    1.6,
    1.4,
    0.8,
    0.6,
    0.7,  # 00-11 h: night, the morning rush
    *(0.9, 0.7, 0.7, 0.9, 1.2, 1.7, 1.8, 1.5, 1.1, 0.8, 0.5, 0.3),  # 12-23 h: the evening
)
"""An hourly profile of a residential building: quiet nights, morning and evening peaks."""


@dataclass(frozen=True)
class ScriptedChange:
    """At ``at_s``, the manager changes resident ``person``'s keycard.

    ``activate`` gives the resident a spare card; ``deactivate`` deactivates the card
    they hold (they keep tapping it, and are refused once doors sync); ``lost``
    revokes it everywhere and activates a spare as its replacement.
    """

    at_s: float
    kind: ChangeKind
    person: int


@dataclass(frozen=True)
class BuildingConfig:
    """Everything a fast run depends on. Same config, same report, byte for byte."""

    seed: int = 1
    online_doors: int = 4
    offline_doors: int = 4
    residents: int = 40
    doors_per_person: int = 3
    phone_share: float = 0.5
    """Fraction of residents with the app on a phone."""
    phone_open_share: float = 0.7
    """At an offline door, how often a resident with a phone uses it rather than the card."""
    opens_per_person_per_day: float = 8.0
    hourly_profile: tuple[float, ...] = ()
    """24 relative weights, one per hour of the day (virtual time zero is midnight);
    empty: openings are spread evenly over the day."""
    duration_s: float = 3_600.0
    changes: tuple[ScriptedChange, ...] = ()
    spare_cards: int = 0
    """Inventory cards beyond one per scripted change."""
    mqtt: MqttModel = field(default_factory=MqttModel)
    ble: BleModel = field(default_factory=BleModel)
    lock_capacity: int = 10_000
    """Credentials a lock holds (the reference lock's 10,000): door 0, which every resident
    opens, holds two per resident (the person and the card)."""
    audit_flush_s: float = 900.0
    """How often an online door holding unacknowledged audit republishes it (a session
    refresh); it also does as soon as it holds ``audit_flush_events`` of them."""
    audit_flush_events: int = 200
    prefetch_s: float = 900.0
    """A phone refreshes its bundle cache when it is older than this at a visit."""
    upload_s: float = 0.200
    """A phone's upload of receipts and audit batches reaches the cloud after this."""
    phones_offline: tuple[tuple[float, float], ...] = ()
    """``(start, end)`` spans in which no phone reaches the cloud (a mobile network
    outage): phones open doors with what they hold and upload when back."""

    def __post_init__(self) -> None:
        if self.online_doors < 1 or self.offline_doors < 0 or self.residents < 1:
            raise ValueError("need at least one online door and one resident")
        if not 1 <= self.doors_per_person <= self.online_doors + self.offline_doors:
            raise ValueError("doors_per_person must be between 1 and the number of doors")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        need = 2 * self.residents + self.spare_cards + len(self.changes)
        if need > self.lock_capacity:
            raise ValueError(
                f"door 0 may need {need} credentials but a lock holds {self.lock_capacity}:"
                " raise lock_capacity"
            )
        profile = self.hourly_profile
        if profile and (len(profile) != 24 or min(profile) < 0 or max(profile) <= 0):
            raise ValueError("hourly_profile needs 24 non-negative weights, not all zero")


@dataclass
class Inventory:
    """Spare keycards: uid hex → card key, handed out in order."""

    cards: list[tuple[str, bytes]]

    def take(self) -> tuple[str, bytes]:
        if not self.cards:
            raise RuntimeError("the inventory has no spare keycard left")
        return self.cards.pop(0)


@dataclass
class Setup:
    """What :func:`build` made: the cloud, the locks and who may open what."""

    sessions: sessionmaker[Session]
    cache: BundleCache
    cloud_random: Callable[[int], bytes]
    manager_id: str
    door_ids: list[str]
    online: list[bool]
    locks: list[Controller]
    person_ids: list[str]
    person_doors: list[list[int]]
    cards: list[tuple[str, bytes]]
    """Each resident's active card: (uid hex, card key)."""
    inventory: Inventory
    cloud_public: bytes


def _label(config: BuildingConfig, what: str) -> str:
    return f"fast seed {config.seed} {what}"


def build(config: BuildingConfig, lock_config: ControllerConfig) -> Setup:
    """A seeded cloud database and commissioned locks (see the module docstring)."""
    engine = make_engine("sqlite://")
    create_schema(engine)
    sessions = session_factory(engine)
    cloud_random = counting_random(_label(config, "cloud"))
    doors = config.online_doors + config.offline_doors
    door_ids = [fixed_bytes(_label(config, f"door {n}"), 16).hex() for n in range(doors)]
    online = [n < config.online_doors for n in range(doors)]
    identities = [_identity(config, door_id) for door_id in door_ids]
    person_ids = [
        fixed_bytes(_label(config, f"person {n}"), 16).hex() for n in range(config.residents)
    ]
    rng = random.Random(_label(config, "layout"))
    person_doors = [
        [0, *sorted(rng.sample(range(1, doors), config.doors_per_person - 1))] for _ in person_ids
    ]
    all_cards = _cards(config, config.residents + len(config.changes) + config.spare_cards)
    cards, inventory = all_cards[: config.residents], Inventory(all_cards[config.residents :])
    manager_id = fixed_bytes(_label(config, "manager"), 16).hex()
    cache = BundleCache()
    with sessions.begin() as session:
        key = ensure_key(session, cloud_random, seed=fixed_bytes(_label(config, "cloud key")))
        _seed_rows(
            session, config, manager_id, door_ids, online, identities, person_ids, person_doors
        )
        _issue_cards(session, all_cards, dict(zip(person_ids, cards, strict=True)))
        _first_lists(session, person_ids, cloud_random, cache)
    locks = [_provision(config, identity, key.public, lock_config) for identity in identities]
    _commission(sessions, cache, cloud_random, door_ids, locks)
    return Setup(
        sessions, cache, cloud_random, manager_id, door_ids, online, locks,
        person_ids, person_doors, cards, inventory, key.public,
    )  # fmt: skip


def _identity(config: BuildingConfig, door_id: str) -> LockIdentity:
    return LockIdentity.generate(
        door_id=bytes.fromhex(door_id),
        property_id=bytes(16),
        doorcode_secret=fixed_bytes(_label(config, f"code {door_id}")),
        random=counting_random(_label(config, f"lock {door_id}")),
    )


def _cards(config: BuildingConfig, count: int) -> list[tuple[str, bytes]]:
    """``count`` keycards: (7-byte uid hex, 16-byte card key)."""
    return [
        (
            fixed_bytes(_label(config, f"card {n}"), 7).hex(),
            fixed_bytes(_label(config, f"key {n}"), 16),
        )
        for n in range(count)
    ]


def _issue_cards(
    session: Session, cards: list[tuple[str, bytes]], holders: dict[str, tuple[str, bytes]]
) -> None:
    """Every card into the inventory; each resident's own card active for them.

    (A card's printed activation code is its uid: this building's changes are made by
    the manager, so no code is ever typed.)"""
    for uid, key in cards:
        session.add(Keycard(uid=uid, card_key=key, activation_code_hash=hash_code(uid)))
    session.flush()
    with Sql(session) as sql:
        for person_id, (uid, _) in holders.items():
            sql.run(
                "UPDATE keycard SET person_id = ?, state = 'active' WHERE uid = ?",
                [person_id, uid],
            )


def _first_lists(
    session: Session,
    person_ids: list[str],
    cloud_random: Callable[[int], bytes],
    cache: BundleCache,
) -> None:
    """The sync engine computes every door's first list (the installer carries it)."""
    with Sql(session) as sql:
        for start in range(0, len(person_ids), 400):
            batch = person_ids[start : start + 400]
            resync(sql, batch, key=key_of(sql), random=cloud_random, cache=cache)
    session.execute(delete(MqttOutbox))  # commissioning carries the first bundles


def _provision(
    config: BuildingConfig, identity: LockIdentity, cloud_public: bytes, lock: ControllerConfig
) -> Controller:
    controller, _ = Controller.provision(
        identity,
        cloud_public,
        lock,
        random=counting_random(_label(config, f"rt {identity.door_id.hex()}")),
        now=0.0,
        wall_time=T0,
    )
    return controller


def _seed_rows(
    session: Session,
    config: BuildingConfig,
    manager_id: str,
    door_ids: list[str],
    online: list[bool],
    identities: list[LockIdentity],
    person_ids: list[str],
    person_doors: list[list[int]],
) -> None:
    portfolio_id = fixed_bytes(_label(config, "portfolio"), 16).hex()
    property_id = fixed_bytes(_label(config, "property"), 16).hex()
    session.add(Portfolio(id=portfolio_id, name="Fast Residential"))
    session.add(Property(id=property_id, portfolio_id=portfolio_id, name="Fast Tower"))
    session.add(Manager(id=manager_id, name="Fast Manager", email="manager@example.com"))
    session.flush()
    session.add(ManagerPortfolio(manager_id=manager_id, portfolio_id=portfolio_id))
    for n, (door_id, identity) in enumerate(zip(door_ids, identities, strict=True)):
        session.add(
            Door(
                id=door_id,
                property_id=property_id,
                name=f"door {n}",
                online=online[n],
                identity_public=identity.identity_public,
                sealing_public=identity.sealing_public,
                doorcode_secret=identity.doorcode_secret,
            )
        )
    session.flush()
    for n, person_id in enumerate(person_ids):
        session.add(Person(id=person_id, name=f"resident {n}", email=f"r{n}@example.com"))
    session.flush()
    for n, person_id in enumerate(person_ids):
        for door in person_doors[n]:
            grant_id = fixed_bytes(_label(config, f"grant {n} {door}"), 16).hex()
            session.add(Grant(id=grant_id, person_id=person_id, door_id=door_ids[door]))
    session.flush()


def _commission(
    sessions: sessionmaker[Session],
    cache: BundleCache,
    cloud_random: Callable[[int], bytes],
    door_ids: list[str],
    locks: list[Controller],
) -> None:
    """The installer carries each door's first bundle in and its receipt out."""
    with sessions.begin() as session:
        key = ensure_key(session, cloud_random)
        for door_id, lock in zip(door_ids, locks, strict=True):
            door = session.get(Door, door_id)
            assert door is not None
            if door.list_version == 0:
                continue  # nobody may open it yet: it starts empty, as it came from the factory
            frame = bundle_frame(session, door, 0, key=key, random=cloud_random, cache=cache)
            actions = lock.handle(FrameReceived(MQTT, frame), 0.0)
            receipts = [
                m
                for a in actions
                if isinstance(a, Send) and isinstance(m := decode_message(a.frame), Receipt)
            ]
            receipt = receipts[0]
            if receipt.status is not ReceiptStatus.OK:
                raise RuntimeError(f"door {door_id} refused its first list: {receipt.status.name}")
            accept_receipt(session, door, receipt.to_bytes())
