"""The cloud learns a lock's key epoch from its signed audit (§6.4, §6.7), issue #4.

Theory of operation: a BLE-only lock sends no HELLO to the cloud, so the only signed word of
its key epoch that reaches the cloud is the KEY_ROTATED event in an AUDIT_BATCH the lock
signed (``detail``: the new epoch); a RECEIPT names no epoch (§6.3).
:meth:`cloud.service.CloudService.audit` (and so ``upload_audit`` and the MQTT bridge's
``ingest_audit``) raises ``door.key_epoch`` to it, never lowers it. The doors the cloud
lists as behind are the ones ``door-cloud rotate-key`` lists: ``key_epoch`` below an epoch.

Two layers. Units: :class:`tests.cloud_world.CloudWorld`'s real controllers take the real
KEY_ROTATION frame and sign the batch the cloud verifies; forged, replayed and impossible
batches change nothing. End to end: the served cloud and the BLE-only Tower doors of
:mod:`tests.test_phone_time_sync` (bleak on bumble's radio); a phone delivers the rotation
on a visit, its audit upload reaches the cloud over HTTP, and the real ``door-cloud
rotate-key`` command no longer lists the door at the old epoch. Both run on SQLite and,
when reachable, PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from cloud.keys import rotate
from cloud.models import AuditRecord, Door
from controller.core import Controller
from controller.events import MQTT, Connected, Disconnected, FrameReceived, Send
from protocol import AuditBatch, AuditEvent, AuditEventKind, AuthenticationError, MessageType
from protocol.crypto import ed25519_private_from_seed
from protocol.frame import decode_frame
from simulators.fixture import fixed_bytes
from tests.cloud_world import CLOUD_SEED, CloudWorld, world_at
from tests.db_fixtures import database_url  # noqa: F401  (fixture: SQLite, PostgreSQL)
from tests.test_ble_door import no_errors_logged  # noqa: F401  (autouse: the doors log no error)
from tests.test_cloud_api import ANA
from tests.test_phone_end_to_end import Site, visit
from tests.test_phone_time_sync import (  # noqa: F401  (site: the served cloud, BLE locks)
    ana_at_home,
    lock_epoch,
    no_signal,
    rotate_key,
    site,
)

BASEMENT = "Tower basement"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:  # noqa: F811
    """The seeded world with a real controller per door, on each database."""
    made = world_at(database_url)
    yield made
    made.engine.dispose()


def behind(world: CloudWorld, epoch: int) -> set[str]:
    """The ids of the doors at a key epoch below ``epoch`` (``door-cloud rotate-key``'s list)."""
    with world.sessions() as session:
        return set(session.scalars(select(Door.id).where(Door.key_epoch < epoch)))


def door_epoch(world: CloudWorld, door_id: str) -> int:
    with world.sessions() as session:
        door = session.get(Door, door_id)
        assert door is not None
        return door.key_epoch


def rotate_lock(world: CloudWorld, lock: Controller) -> int:
    """Rotate the cloud key and hand the real KEY_ROTATION frame to ``lock``; the new epoch."""
    with world.sessions.begin() as session:
        rotation = rotate(session, world.random)
    assert _sent(lock.handle(FrameReceived(MQTT, rotation.to_frame()), float(world.now))) == []
    assert lock.state.cloud.epoch == rotation.new_epoch
    return rotation.new_epoch


def audit_batch(world: CloudWorld, lock: Controller) -> bytes:
    """The AUDIT_BATCH payload the lock signs on a new session: its unacknowledged events."""
    now = float(world.now)
    lock.handle(Disconnected(MQTT), now)
    frames = _sent(lock.handle(Connected(MQTT), now))
    (payload,) = [p for kind, p in frames if kind == MessageType.AUDIT_BATCH]
    return payload


def _sent(actions: Sequence[object]) -> list[tuple[int, bytes]]:
    """The (frame type, payload) of every frame among ``actions``."""
    frames = [decode_frame(a.frame) for a in actions if isinstance(a, Send)]
    return [(kind, payload) for _, kind, payload in frames]


def signed_batch(door_id: str, events: tuple[AuditEvent, ...], key: Ed25519PrivateKey) -> bytes:
    """A batch of ``events`` for ``door_id`` signed with ``key``."""
    batch = AuditBatch(door_id=bytes.fromhex(door_id), events=events)
    return batch.signed(key).to_bytes()


def key_rotated(seq: int, epoch: int, time: int) -> AuditEvent:
    return AuditEvent(seq=seq, time=time, kind=AuditEventKind.KEY_ROTATED, detail=epoch)


# --- units: CloudService with real controllers -------------------------------------------------


def test_a_verified_key_rotated_event_raises_the_door_key_epoch(world: CloudWorld) -> None:
    door_id = world.seed.doors[BASEMENT]
    lock = world.locks[door_id]
    epoch = rotate_lock(world, lock)
    assert door_id in behind(world, epoch)

    payload = audit_batch(world, lock)
    kinds = [e.kind for e in AuditBatch.from_bytes(payload).events]
    assert AuditEventKind.KEY_ROTATED in kinds
    with world.service() as cloud:
        ack = cloud.audit(door_id, payload)
    assert ack.up_to_seq == len(kinds)
    assert door_epoch(world, door_id) == epoch == 1
    assert door_id not in behind(world, epoch)
    assert world.seed.doors["Tower gym"] in behind(world, epoch)  # no rotation there


def test_a_phone_upload_raises_the_epoch_one_rotation_at_a_time(world: CloudWorld) -> None:
    door_id = world.seed.doors[BASEMENT]
    lock = world.locks[door_id]
    for expected in (1, 2):
        epoch = rotate_lock(world, lock)
        with world.service() as cloud:
            cloud.upload_audit(door_id, audit_batch(world, lock))  # the phone's HTTP path
        assert door_epoch(world, door_id) == epoch == expected
    with world.sessions() as session:
        details = session.scalars(
            select(AuditRecord.detail).where(
                AuditRecord.door_id == door_id,
                AuditRecord.kind == int(AuditEventKind.KEY_ROTATED),
            )
        )
        assert sorted(details) == [1, 2]


def test_a_forged_audit_batch_changes_no_key_epoch(world: CloudWorld) -> None:
    door_id, gym_id = world.seed.doors[BASEMENT], world.seed.doors["Tower gym"]
    gym = world.locks[gym_id]
    rotate_lock(world, gym)  # epoch 1 exists: a claim of it would be believable
    events = (key_rotated(1, 1, world.now),)
    relay_key = ed25519_private_from_seed(fixed_bytes("a relay's own key"))
    forgeries = {
        "a relay's own key": signed_batch(door_id, events, relay_key),
        "the cloud's key": signed_batch(door_id, events, ed25519_private_from_seed(CLOUD_SEED)),
        "the gym lock's key": signed_batch(door_id, events, gym.state.identity.identity_key()),
        "the gym's genuine batch": audit_batch(world, gym),
    }
    genuine = bytearray(audit_batch(world, world.locks[door_id]))
    genuine[-65] ^= 1  # the last byte before the signature: the lock's words, edited
    forgeries["an edited batch"] = bytes(genuine)
    for what, forged in forgeries.items():
        with world.service() as cloud, pytest.raises(AuthenticationError):
            cloud.audit(door_id, forged)
        with world.sessions() as session:
            door = session.get(Door, door_id)
            assert door is not None and (door.key_epoch, door.audit_next_seq) == (0, 1), what
    assert door_epoch(world, gym_id) == 0  # nothing was stored for the gym either
    assert behind(world, 1) == set(world.seed.doors.values())


def test_the_key_epoch_never_goes_down_and_an_impossible_one_is_ignored(
    world: CloudWorld,
) -> None:
    door_id = world.seed.doors[BASEMENT]
    lock = world.locks[door_id]
    rotate_lock(world, lock)
    first = audit_batch(world, lock)
    rotate_lock(world, lock)
    with world.service() as cloud:
        cloud.audit(door_id, audit_batch(world, lock))
    assert door_epoch(world, door_id) == 2
    with world.service() as cloud:
        cloud.audit(door_id, first)  # an older batch again (a relay's replay): epoch 1 in it
    assert door_epoch(world, door_id) == 2

    # Signed by the lock itself, but naming an epoch the cloud never made: not believed.
    # The seq (1000) lies beyond what is stored: a gap, yet the signature is the lock's.
    own = lock.state.identity.identity_key()
    impossible = signed_batch(door_id, (key_rotated(1000, 9, world.now),), own)
    with world.service() as cloud:
        cloud.audit(door_id, impossible)
    assert door_epoch(world, door_id) == 2
    with world.sessions.begin() as session:
        rotate(session, world.random)
    gap = signed_batch(door_id, (key_rotated(1000, 3, world.now),), own)
    with world.service() as cloud:
        cloud.audit(door_id, gap)  # a verified gap: nothing stored, but the epoch is proven
        assert cloud.door(door_id).audit_gaps == 2
    assert door_epoch(world, door_id) == 3


# --- end to end: a phone rotates a BLE-only lock, its audit upload tells the cloud ------------


async def test_a_phone_visit_that_rotates_a_ble_lock_takes_it_off_the_behind_list(
    site: Site,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    phone = await ana_at_home(site)
    rotate_key(site)
    basement, gym = site.door(BASEMENT), site.door("Tower gym")
    assert {basement, gym} <= behind(site.api.world, 1)
    await phone.login(site.api.tokens[ANA])  # a credential signed at epoch 1
    assert (await phone.prefetch()).online

    at_door = await visit(phone, basement)  # the rotation goes in before AUTH
    report = at_door.report
    assert report.opened and (report.key_epoch_before, report.key_epoch_after) == (0, 1)
    assert lock_epoch(site, BASEMENT) == 1
    assert at_door.drain.uploaded >= 1 and not at_door.drain.offline
    assert basement not in behind(site.api.world, 1)
    assert gym in behind(site.api.world, 1)  # no phone has been there since

    capsys.readouterr()
    rotate_key(site)  # epoch 2: every door is behind it; the listing shows where each is
    listing = capsys.readouterr().out
    assert f"{basement}  epoch 1  {BASEMENT}" in listing
    assert f"{gym}  epoch 0  Tower gym" in listing


async def test_a_rotation_an_offline_phone_carried_is_learned_from_a_later_visit_upload(
    site: Site,  # noqa: F811
    no_signal: str,  # noqa: F811
) -> None:
    online = await ana_at_home(site)
    rotate_key(site)
    assert (await online.prefetch()).online  # the rotation; the credential is still epoch 0
    offline = await site.phone(ANA, cloud_url=no_signal)
    carried = await visit(offline, site.door(BASEMENT))  # the rotation after the audit step
    assert carried.report.key_epoch_after == lock_epoch(site, BASEMENT) == 1
    assert carried.drain.offline
    assert site.door(BASEMENT) in behind(site.api.world, 1)  # nothing signed has arrived

    await online.login(site.api.tokens[ANA])  # epoch 1: the lock accepts it, then its audit
    later = await visit(online, site.door(BASEMENT))  # KEY_ROTATED goes out on this session
    assert later.report.opened and not later.drain.offline
    assert site.door(BASEMENT) not in behind(site.api.world, 1)
