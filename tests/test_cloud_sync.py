"""The sync engine's lists stay true: cached lists, set-based bumps, bundles from any base.

Theory of operation: a seeded world (``tests.cloud_world``) on SQLite and PostgreSQL runs a
seeded random sequence of keycard changes by residents. Some transactions are rolled back
after the change ran, which must leave no trace, in particular not in the process's list
cache (:class:`cloud.sync.BundleCache`), which is filled only on commit. After every
committed change, each door's recorded digest must equal the digest of its list rebuilt
from the table; now and then a door is synced with its real lock, which checks the
bundle's signed target digest against the list it computes itself.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from cloud.errors import CloudError
from cloud.models import Door, DoorVersion, Keycard
from cloud.sync import door_list
from tests.cloud_world import CloudWorld, world_at

STEPS = 120
FREE = ("inventory", "deactivated")


class _Undo(Exception):
    """Raised inside a transaction to roll it back after the change ran."""


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:
    world = world_at(database_url)
    yield world
    world.engine.dispose()


def _check_digests(world: CloudWorld) -> None:
    with world.sessions() as session:
        for door in session.query(Door):
            recorded = session.get(DoorVersion, (door.id, door.list_version))
            rebuilt = door_list(session, door).digest
            if door.list_version == 0:
                assert recorded is None
            else:
                assert recorded is not None and recorded.digest == rebuilt, door.name


def _sync(world: CloudWorld, door_id: str) -> None:
    """Carry the door's bundle to its lock (which checks the digest) unless it holds nothing."""
    with world.sessions() as session:
        door = session.get(Door, door_id)
        assert door is not None
        version = door.list_version
    if version > 0:
        assert world.sync_door(door_id) == version


def _change(world: CloudWorld, rng: random.Random) -> bool:
    """One keycard change a resident may make now; False when none applied."""
    person = world.seed.people[rng.choice(sorted(world.seed.people))]
    codes = dict(world.seed.cards.values())
    with world.service() as cloud:
        cards = cloud.session.scalars(select(Keycard).order_by(Keycard.uid)).all()
        free = [c.uid for c in cards if c.person_id in (None, person) and c.state in FREE]
        held = [c.uid for c in cards if c.person_id == person and c.state == "active"]
        if held and rng.random() < 0.5:
            uid = rng.choice(held)
            if rng.random() < 0.5:
                cloud.self_deactivate(person, uid)
            else:
                cloud.report_lost(person, uid)
        elif free:
            uid = rng.choice(free)
            cloud.self_activate(person, uid, codes[uid])
        else:
            return False
    return True


def test_lists_stay_true_through_random_changes_rollbacks_and_syncs(world: CloudWorld) -> None:
    rng = random.Random(20261127)
    door_ids = sorted(world.seed.doors.values())
    committed = synced = 0
    for _ in range(STEPS):
        undo = rng.random() < 0.3
        try:
            if undo:
                with world.service() as cloud:
                    person = world.seed.people[rng.choice(sorted(world.seed.people))]
                    uid, code = world.seed.cards[rng.choice(sorted(world.seed.cards))]
                    cloud.self_activate(person, uid, code)
                    raise _Undo
            else:
                committed += _change(world, rng)
        except (_Undo, CloudError):
            pass
        _check_digests(world)
        if rng.random() < 0.25:
            _sync(world, rng.choice(door_ids))
            synced += 1
    for door_id in door_ids:
        _sync(world, door_id)
    with world.sessions() as session:
        assert all(d.synced_version == d.list_version for d in session.query(Door))
    assert committed >= 25 and synced >= 10  # the run exercised enough (seeded)
