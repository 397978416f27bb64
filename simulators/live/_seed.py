"""A scenario's world in the cloud database, and each lock's first list.

Theory of operation
-------------------
:func:`scenario_seeder` returns a :data:`~simulators.building.Seeder` that fills an empty
cloud database with a scenario's world, the way an operator would have before the run:
its portfolios; its buildings as properties; every door (online doors are MQTT doors,
offline doors BLE doors) with the keys of the lock the building provisioned for it; every
person with a door grant per door of their access, their keycards (active when the
scenario says they start active, :meth:`~simulators.scenario.Scenario.starts_active`;
otherwise unassigned in the inventory until an ``activate`` event, as in fast mode) and,
for a person with the app, the fact that they used it before (so their phone may log in);
the managers and their portfolios; a bearer token per person and manager; and one spare
card in the inventory per ``lost_card`` event that issues a replacement. Then the sync
engine computes every door's first list (:func:`cloud.sync.resync`) and the MQTT outbox
is cleared: the installer carries those lists.

:func:`commission` is that installer, for one lock, before its face starts and before
scenario time 0: the first bundle straight into the runtime, its receipt straight back to
the cloud. Nothing of it counts towards any figure.

Names: a door is named ``"<building>/<door>"`` in :class:`~cloud.seed.SeedResult` (door
names are unique only within a building; the cloud keeps the plain name); cards by their
scenario names; person and manager tokens in :class:`LiveWorld`, since a manager may share
a name with a resident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlalchemy.orm import Session

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
    Token,
)
from cloud.seed import DoorKeys, SeedResult, token_hash
from cloud.service import hash_code
from cloud.sql import Sql
from cloud.sync import BundleCache, accept_receipt, bundle_frame, resync
from controller.events import MQTT, FrameReceived, Send
from controller.runtime import LockRuntime
from protocol import Receipt, ReceiptStatus, decode_message

from ..building import Seeder
from ..scenario import LostCard, Scenario

__all__ = ["LiveWorld", "commission", "door_key", "scenario_seeder"]

_RESYNC_BATCH = 400


def door_key(building: str, door: str) -> str:
    """How live mode names a door: ``"<building>/<door>"``."""
    return f"{building}/{door}"


@dataclass
class LiveWorld:
    """What the seeder made, beyond :class:`~cloud.seed.SeedResult`."""

    person_tokens: dict[str, str] = field(default_factory=dict)
    manager_tokens: dict[str, str] = field(default_factory=dict)
    replacements: dict[str, str] = field(default_factory=dict)
    """Lost card name → the name of the spare card that replaces it."""


def scenario_seeder(scenario: Scenario, world: LiveWorld) -> Seeder:
    """A seeder of ``scenario``'s world that also fills ``world``."""

    def seed(session: Session, random: Callable[[int], bytes], keys: DoorKeys) -> SeedResult:
        ensure_key(session, random)
        out = SeedResult()
        _places(session, scenario, random, keys, out)
        _people(session, scenario, random, out, world)
        _managers(session, scenario, random, out, world)
        _spare_cards(session, scenario, random, out, world)
        _first_lists(session, list(out.people.values()), random)
        return out

    return seed


def _places(
    session: Session,
    scenario: Scenario,
    random: Callable[[int], bytes],
    keys: DoorKeys,
    out: SeedResult,
) -> None:
    for portfolio in scenario.portfolios:
        out.portfolios[portfolio.name] = random(16).hex()
        session.add(Portfolio(id=out.portfolios[portfolio.name], name=portfolio.name))
    session.flush()
    for building in scenario.buildings:
        out.properties[building.name] = property_id = random(16).hex()
        portfolio_id = out.portfolios[building.portfolio]
        session.add(Property(id=property_id, portfolio_id=portfolio_id, name=building.name))
    session.flush()
    for building in scenario.buildings:
        for door in building.doors:
            door_id = random(16).hex()
            identity, sealing, secret = keys(door_id)
            out.doors[door_key(building.name, door.name)] = door_id
            session.add(
                Door(
                    id=door_id,
                    property_id=out.properties[building.name],
                    name=door.name,
                    online=door.online,
                    identity_public=identity,
                    sealing_public=sealing,
                    doorcode_secret=secret,
                )
            )
    session.flush()


def _people(
    session: Session,
    scenario: Scenario,
    random: Callable[[int], bytes],
    out: SeedResult,
    world: LiveWorld,
) -> None:
    for person in scenario.people:
        out.people[person.name] = person_id = random(16).hex()
        session.add(
            Person(id=person_id, name=person.name, email=person.email, used_app=person.phone)
        )
    session.flush()
    for person in scenario.people:
        person_id = out.people[person.name]
        for access in person.access:
            for door in access.doors:
                door_id = out.doors[door_key(access.building, door)]
                session.add(Grant(id=random(16).hex(), person_id=person_id, door_id=door_id))
        for card in person.cards:  # as fast mode: an inactive card waits in the inventory
            if scenario.starts_active(person, card):
                _card(session, random, out, card, holder=person_id, state="active")
            else:
                _card(session, random, out, card, holder=None, state="inventory")
        world.person_tokens[person.name] = _token(session, random, "resident", person_id)
    session.flush()


def _managers(
    session: Session,
    scenario: Scenario,
    random: Callable[[int], bytes],
    out: SeedResult,
    world: LiveWorld,
) -> None:
    for manager in scenario.managers:
        out.managers[manager.name] = manager_id = random(16).hex()
        session.add(Manager(id=manager_id, name=manager.name, email=manager.email))
        session.flush()
        for portfolio in manager.portfolios:
            session.add(
                ManagerPortfolio(manager_id=manager_id, portfolio_id=out.portfolios[portfolio])
            )
        world.manager_tokens[manager.name] = _token(session, random, "manager", manager_id)
    session.flush()


def _spare_cards(
    session: Session,
    scenario: Scenario,
    random: Callable[[int], bytes],
    out: SeedResult,
    world: LiveWorld,
) -> None:
    """One inventory card per ``lost_card`` event that issues a replacement."""
    for event in scenario.events:
        if isinstance(event, LostCard) and event.replace:
            name = f"{event.card} replacement"
            while name in out.cards:
                name += "+"
            _card(session, random, out, name, holder=None, state="inventory")
            world.replacements[event.card] = name
    session.flush()


def _card(
    session: Session,
    random: Callable[[int], bytes],
    out: SeedResult,
    name: str,
    *,
    holder: str | None,
    state: str,
) -> None:
    uid, code = random(7).hex(), random(4).hex().upper()
    out.cards[name] = (uid, code)
    session.add(
        Keycard(
            uid=uid,
            card_key=random(16),
            activation_code_hash=hash_code(code),
            person_id=holder,
            state=state,
        )
    )


def _token(session: Session, random: Callable[[int], bytes], role: str, subject: str) -> str:
    token = random(24).hex()
    session.add(Token(token_hash=token_hash(token), role=role, subject_id=subject))
    return token


def _first_lists(session: Session, person_ids: list[str], random: Callable[[int], bytes]) -> None:
    """Every door's first list; the installer carries them, so the outbox is cleared."""
    cache = BundleCache()
    with Sql(session) as sql:
        for start in range(0, len(person_ids), _RESYNC_BATCH):
            batch = person_ids[start : start + _RESYNC_BATCH]
            resync(sql, batch, key=key_of(sql), random=random, cache=cache)
    session.execute(delete(MqttOutbox))


class CommissioningError(Exception):
    """A lock refused its first list (the message says which and why)."""


def commission(
    session: Session, runtime: LockRuntime, door_id: str, random: Callable[[int], bytes]
) -> None:
    """Carry the door's first bundle into ``runtime`` and its receipt to the cloud."""
    door = session.get(Door, door_id)
    if door is None or door.list_version == 0:
        return  # nobody may open it yet: it starts empty, as it came from the factory
    frame = bundle_frame(
        session, door, 0, key=ensure_key(session, random), random=random, cache=BundleCache()
    )
    sent = [a.frame for a in runtime.handle(FrameReceived(MQTT, frame)) if isinstance(a, Send)]
    receipts = [m for f in sent if isinstance(m := decode_message(f), Receipt)]
    if not receipts or receipts[0].status is not ReceiptStatus.OK:
        status = receipts[0].status.name if receipts else "no receipt"
        raise CommissioningError(f"door {door.name} refused its first list: {status}")
    accept_receipt(session, door, receipts[0].to_bytes())
