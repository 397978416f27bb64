"""Keycard changes on a raw DB-API transaction (cloud.raw_tx), SQLite and PostgreSQL.

The raw path must do exactly what a session's transaction does: the same doors bumped,
the same outbox and email rows, the bundle the lock applies; nothing at all when a rule
refuses; a wrong code counted even though the change is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.exc import UnboundExecutionError

from cloud.errors import InvalidInputError, PortfolioRuleError, RateLimitedError
from cloud.models import AuditRecord, CodeAttempt, Door, EmailOutbox, Keycard, MqttOutbox, Phone
from cloud.raw_tx import RawTransactions, raw_service
from cloud.service import CloudService
from cloud.sync import took_outbox
from protocol import AuditBatch, ReceiptStatus
from tests.cloud_world import CloudWorld, world_at
from tests.test_cloud_key_epochs import audit_batch


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:
    world = world_at(database_url)
    yield world
    world.engine.dispose()


def _raw(world: CloudWorld) -> AbstractContextManager[CloudService]:
    return raw_service(world.engine, world.now, world.random, world.cache)


def _count(world: CloudWorld, model: type) -> int:
    with world.sessions() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def _versions(world: CloudWorld) -> dict[str, int]:
    with world.sessions() as session:
        return {door.id: door.list_version for door in session.scalars(select(Door))}


def test_raw_activation_reaches_the_locks_like_a_session_one(world: CloudWorld) -> None:
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    uid, _ = world.seed.cards["card-1"]
    before = _versions(world)
    with _raw(world) as cloud:
        changes = cloud.activate_on_behalf(maya, ana, uid)
    assert took_outbox(cloud.session)  # the lobby is online: wake the MQTT bridge
    doors = {world.seed.doors[n] for n in ("Tower lobby", "Tower basement", "Tower gym")}
    assert {c.door_id for c in changes} == doors
    after = _versions(world)
    assert {d for d in after if after[d] != before[d]} == doors
    assert all(after[c.door_id] == before[c.door_id] + 1 == c.version for c in changes)
    assert _count(world, MqttOutbox) == 1 and _count(world, EmailOutbox) == 1
    with world.service() as session_cloud:
        status = session_cloud.person_status(ana)
    assert status.keycards[0].status == "activation pending"
    for door in doors:  # the real locks apply what the raw transaction sealed
        world.sync_door(door)
    with world.service() as session_cloud:
        assert session_cloud.person_status(ana).keycards[0].status == "active"


def test_a_refused_raw_change_leaves_nothing_and_caches_nothing(world: CloudWorld) -> None:
    chloe, maya = world.seed.people["Chloe Martin"], world.seed.managers["Maya Chen"]
    uid, _ = world.seed.cards["card-2"]
    before = _versions(world)
    with pytest.raises(PortfolioRuleError, match="must self-activate"), _raw(world) as cloud:
        cloud.activate_on_behalf(maya, chloe, uid)
    assert not took_outbox(cloud.session)
    assert _versions(world) == before and _count(world, MqttOutbox) == 0
    with world.sessions() as session:
        assert session.get(Keycard, uid.lower()).state == "inventory"  # type: ignore[union-attr]


def test_an_exception_midway_rolls_the_whole_change_back(world: CloudWorld) -> None:
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    uid, _ = world.seed.cards["card-1"]
    before = _versions(world)
    with pytest.raises(RuntimeError, match="crash"), _raw(world) as cloud:
        cloud.activate_on_behalf(maya, ana, uid)
        raise RuntimeError("crash after the change, before the commit")
    assert _versions(world) == before
    assert _count(world, MqttOutbox) == 0 and _count(world, EmailOutbox) == 0
    # The rolled-back versions are reused by the next change: it must seal fresh bundles.
    with _raw(world) as cloud:
        changes = cloud.activate_on_behalf(maya, ana, uid)
    for change in changes:
        world.sync_door(change.door_id)
    with world.service() as session_cloud:
        assert session_cloud.person_status(ana).keycards[0].status == "active"


def test_wrong_codes_are_counted_on_the_raw_path_too(world: CloudWorld) -> None:
    chloe = world.seed.people["Chloe Martin"]
    uid, code = world.seed.cards["card-3"]
    for _ in range(5):
        with pytest.raises(InvalidInputError, match="not right"), _raw(world) as cloud:
            cloud.self_activate(chloe, uid, "WRONG")
    assert _count(world, CodeAttempt) == 5  # each refusal committed its attempt
    with pytest.raises(RateLimitedError), _raw(world) as cloud:
        cloud.self_activate(chloe, uid, code)
    world.now += 15 * 60
    with _raw(world) as cloud:
        assert len(cloud.self_activate(chloe, uid, code)) == 3


def test_a_phone_logs_in_and_fetches_bundles_on_the_raw_path(world: CloudWorld) -> None:
    """A phone's login and bundle fetch run on a raw transaction like on a session; the
    bundles it fetches are the ones the locks apply (a phone carries them)."""
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    uid, _ = world.seed.cards["card-1"]
    with _raw(world) as cloud:
        changed = {c.door_id for c in cloud.activate_on_behalf(maya, ana, uid)}
    phone = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with _raw(world) as cloud:
        credential = cloud.login_phone(ana, phone)
        fetched = cloud.pending_bundles(ana)
    assert credential.phone_public_key == phone
    assert set(fetched) == changed
    with world.sessions() as session:
        stored = session.get(Phone, credential.credential_id.hex())
        assert stored is not None and stored.credential == credential.to_bytes()
        assert stored.person_id == ana
    for door_id, frame in fetched.items():
        receipt = world.deliver(door_id, frame)
        assert receipt.status is ReceiptStatus.OK
    with world.service() as session_cloud:
        assert session_cloud.pending_bundles(ana) != {}  # receipts not uploaded yet: pending


def test_a_lost_card_and_an_audit_upload_run_on_the_raw_path(world: CloudWorld) -> None:
    """Report lost (with the doors still accepting the card) and a lock's audit batch, each
    in a raw transaction: the same outcome a session's transaction gives."""
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    uid, _ = world.seed.cards["card-1"]
    with _raw(world) as cloud:
        cloud.activate_on_behalf(maya, ana, uid)
    lobby = world.seed.doors["Tower lobby"]
    world.sync_door(lobby)
    with _raw(world) as cloud:
        changes, accepting = cloud.report_lost(ana, uid, manager_id=maya)
    assert lobby in accepting and {c.door_id for c in changes} >= set(accepting)
    receipt = world.deliver(lobby, world.pending_frame(lobby))
    with _raw(world) as cloud:
        assert cloud.receipt(lobby, receipt.to_bytes()) == receipt.list_version
        assert lobby not in cloud.doors_accepting(uid)
    batch = audit_batch(world, world.locks[lobby])
    with _raw(world) as cloud:
        ack = cloud.upload_audit(lobby, batch)
    assert ack.up_to_seq == AuditBatch.from_bytes(batch).last_seq
    assert _count(world, AuditRecord) == ack.up_to_seq


def test_orm_operations_are_refused_on_the_raw_path(world: CloudWorld) -> None:
    with pytest.raises(UnboundExecutionError), _raw(world) as cloud:
        assert isinstance(cloud, CloudService)
        cloud.person(world.seed.people["Ana Ruiz"])


def test_transactions_on_one_held_connection_behave_like_separate_ones(
    world: CloudWorld,
) -> None:
    """:class:`RawTransactions` runs each transaction as :func:`raw_service` does: a commit,
    a refusal, a crash and a counted wrong code one after another on one connection, each
    with its own notes (an outbox note is not left over for the next)."""
    ana, chloe = world.seed.people["Ana Ruiz"], world.seed.people["Chloe Martin"]
    maya = world.seed.managers["Maya Chen"]
    transactions = RawTransactions(world.engine)

    def raw() -> AbstractContextManager[CloudService]:
        return transactions.service(world.now, world.random, world.cache)

    with pytest.raises(RuntimeError, match="crash"), raw() as cloud:
        cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
        raise RuntimeError("crash before the commit")
    assert not took_outbox(cloud.session) and _count(world, MqttOutbox) == 0
    with raw() as cloud:  # after a crash: a fresh connection
        changes = cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
    with raw() as second:
        assert second.session is cloud.session  # one notes session, cleared at each begin
        second.doors_accepting(world.seed.cards["card-1"][0])
    assert not took_outbox(second.session)  # the first one's outbox note is gone
    assert _count(world, MqttOutbox) == 1 and _count(world, EmailOutbox) == 1
    uid, _ = world.seed.cards["card-2"]
    with pytest.raises(PortfolioRuleError), raw() as cloud:
        cloud.activate_on_behalf(maya, chloe, uid)
    with pytest.raises(InvalidInputError, match="not right"), raw() as cloud:
        cloud.self_activate(chloe, uid, "WRONG")
    assert _count(world, CodeAttempt) == 1  # committed although refused
    transactions.close()
    for change in changes:  # what the held connection committed is what the locks apply
        world.sync_door(change.door_id)
    with world.service() as session_cloud:
        assert session_cloud.person_status(ana).keycards[0].status == "active"
