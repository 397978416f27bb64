"""``door-cloud seed-demo``: a small portfolio world to try the cloud with.

Theory of operation: two portfolios; three buildings; doors of both kinds
(online MQTT doors and offline BLE doors, one of them a basement door); residents,
one of whom also lives in the second portfolio (so no single manager may act for
her); two managers; a stack of keycards with their activation codes; and a bearer
token per manager and resident. Door keys come from ``door_keys`` — the simulator
passes the public keys of the locks it provisioned; by default fresh keys are
made (the console works, but no real lock can then open those bundles).
All ids and tokens are derived from ``random`` so a seeded run is reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from protocol.crypto import ed25519_private_from_seed, public_bytes, x25519_private_from_seed

from .keys import ensure_key
from .models import (
    Door,
    Grant,
    Keycard,
    Manager,
    ManagerPortfolio,
    Person,
    Portfolio,
    Property,
    Token,
)
from .service import hash_code

__all__ = ["DoorKeys", "SeedResult", "seed_demo", "token_hash"]

DoorKeys = Callable[[str], tuple[bytes, bytes, bytes]]
"""door id hex → (identity public, sealing public, doorcode secret)."""


def token_hash(token: str) -> str:
    """How bearer tokens are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class SeedResult:
    """What a seeded world holds, for the demo and tests."""

    portfolios: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    doors: dict[str, str] = field(default_factory=dict)
    people: dict[str, str] = field(default_factory=dict)
    managers: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    """name → bearer token (managers and residents)."""
    cards: dict[str, tuple[str, str]] = field(default_factory=dict)
    """card label → (uid hex, activation code)."""


def _random_keys(random: Callable[[int], bytes]) -> DoorKeys:
    def keys(_door_id: str) -> tuple[bytes, bytes, bytes]:
        identity = public_bytes(ed25519_private_from_seed(random(32)))
        return identity, public_bytes(x25519_private_from_seed(random(32))), random(32)

    return keys


def seed_demo(
    session: Session,
    random: Callable[[int], bytes],
    *,
    door_keys: DoorKeys | None = None,
    cloud_seed: bytes | None = None,
) -> SeedResult:
    """Fill an empty database with the demo world; return its ids and tokens."""
    ensure_key(session, random, seed=cloud_seed)
    keys = door_keys or _random_keys(random)
    out = SeedResult()

    def new_id() -> str:
        return random(16).hex()

    for name in ("Harbor Residential", "Elm Street Partners"):
        out.portfolios[name] = new_id()
        session.add(Portfolio(id=out.portfolios[name], name=name))
    buildings = {
        "Harbor Tower": "Harbor Residential",
        "Harbor Lofts": "Harbor Residential",
        "Elm Court": "Elm Street Partners",
    }
    for name, portfolio in buildings.items():
        out.properties[name] = new_id()
        session.add(
            Property(id=out.properties[name], portfolio_id=out.portfolios[portfolio], name=name)
        )
    session.flush()
    doors = {
        "Tower lobby": ("Harbor Tower", True),
        "Tower basement": ("Harbor Tower", False),
        "Tower gym": ("Harbor Tower", False),
        "Lofts entrance": ("Harbor Lofts", True),
        "Elm Court gate": ("Elm Court", True),
        "Elm Court bike room": ("Elm Court", False),
    }
    for name, (building, online) in doors.items():
        door_id = new_id()
        identity, sealing, secret = keys(door_id)
        out.doors[name] = door_id
        session.add(
            Door(
                id=door_id,
                property_id=out.properties[building],
                name=name,
                online=online,
                identity_public=identity,
                sealing_public=sealing,
                doorcode_secret=secret,
            )
        )
    session.flush()
    residents = {
        "Ana Ruiz": ["Harbor Tower"],
        "Ben Okafor": ["Harbor Tower"],
        "Chloe Martin": ["Harbor Lofts", "Elm Court"],
    }
    for name, homes in residents.items():
        out.people[name] = new_id()
        session.add(Person(id=out.people[name], name=name, email=_email(name)))
        session.flush()
        for building in homes:
            session.add(
                Grant(id=new_id(), person_id=out.people[name], property_id=out.properties[building])
            )
        out.tokens[name] = _token(session, random, "resident", out.people[name])
    managers = {"Maya Chen": ["Harbor Residential"], "Omar Haddad": ["Elm Street Partners"]}
    for name, portfolios in managers.items():
        out.managers[name] = new_id()
        session.add(Manager(id=out.managers[name], name=name, email=_email(name)))
        session.flush()
        for portfolio in portfolios:
            session.add(
                ManagerPortfolio(
                    manager_id=out.managers[name], portfolio_id=out.portfolios[portfolio]
                )
            )
        out.tokens[name] = _token(session, random, "manager", out.managers[name])
    for n in range(8):
        uid, code = random(7).hex(), random(4).hex().upper()
        out.cards[f"card-{n + 1}"] = (uid, code)
        session.add(Keycard(uid=uid, card_key=random(16), activation_code_hash=hash_code(code)))
    session.flush()
    return out


def _email(name: str) -> str:
    return name.lower().replace(" ", ".") + "@example.com"


def _token(session: Session, random: Callable[[int], bytes], role: str, subject: str) -> str:
    token = random(24).hex()
    session.add(Token(token_hash=token_hash(token), role=role, subject_id=subject))
    return token
