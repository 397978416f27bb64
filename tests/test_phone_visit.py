"""A phone's door visit end to end: bleak API, bumble's radio, a real BleDoor and lock runtime.

The bench of ``test_ble_door`` (one provisioned lock on in-memory flash, a phone radio, one
:class:`infra.radio.RadioLink`) and the phone's real parts: :func:`phone_bridge.visit.
visit_door` over :class:`phone_bridge.link.FrameLink` over ``BleakClient`` with the
:class:`~phone_bridge.bleak_bumble.BumbleClient` backend, and a :class:`PhoneStore` file.
The lock first holds the resident (a grant delivered by the test's raw phone); the phone
then carries the cloud's next bundle. Every wait is bounded; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakClient
from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.config import ControllerConfig
from infra.radio import RadioLink
from phone_bridge.bleak_bumble import BumbleClient
from phone_bridge.link import FrameLink, LinkSession, LinkTimeoutError
from phone_bridge.store import PhoneStore, UploadKind
from phone_bridge.visit import ClientFactory, VisitConfig, VisitError, VisitReport, visit_door
from protocol import (
    AuditAck,
    AuditBatch,
    AuditEventKind,
    Credential,
    CredentialKind,
    ErrorCode,
    Hello,
    Intent,
    MessageType,
    MobileCredential,
    Reason,
    Receipt,
    ReceiptStatus,
    ScopeKind,
)
from protocol.crypto import ed25519_private_from_seed, public_bytes
from protocol.frame import decode_frame, encode_frame
from protocol.segmentation import Segment, max_chunk
from protocol.transport import CHAR_RX_UUID
from simulators.fixture import fixed_bytes
from tests.test_ble_door import (
    PERSON,
    WAIT,
    WALL_TIME,
    Bench,
    PhoneLink,
    expect,
    make_bench,
    no_errors_logged,  # noqa: F401  (autouse: the door logs no error)
    payload,
)

NOW = WALL_TIME + 100


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    """A lock that holds the resident (version 1), and the phone's radio."""
    made = await make_bench(RadioLink())
    link = await PhoneLink.connect(made.phone, made.door, 247)
    await expect(link, Hello)
    await link.send(made.grant_person(), transfer_id=1)
    receipt = await expect(link, Receipt)
    assert isinstance(receipt, Receipt) and receipt.list_version == 1
    await link.disconnect()
    yield made
    await made.door.stop()
    await made.phone.power_off()


@pytest.fixture
def store(tmp_path: Path) -> PhoneStore:
    return PhoneStore(tmp_path / "phone.sqlite")


def credential(
    bench: Bench,
    *,
    cloud_key: Ed25519PrivateKey | None = None,
    door_id: bytes | None = None,
    person: bytes = PERSON,
) -> MobileCredential:
    """The resident's mobile credential, signed by the cloud (or by *cloud_key*)."""
    return MobileCredential(
        key_epoch=0,
        credential_id=fixed_bytes("visit mobile credential", 16),
        person_id=person,
        phone_public_key=public_bytes(bench.phone_key),
        valid_from=WALL_TIME - 60,
        valid_until=WALL_TIME + 7 * 86_400,
        scope_kind=ScopeKind.DOORS,
        scope_ids=(door_id or bench.identity.door_id,),
    ).signed(cloud_key or bench.world.cloud_key)


def clients(bench: Bench, *, mtu: int = 247, **extra: Any) -> ClientFactory:
    """Bleak clients for the bench's door on the phone's bumble radio."""
    backend = extra.pop("backend", BumbleClient)
    address = bench.door.address.to_string(False)
    return lambda closed: BleakClient(
        address, closed, backend=backend, central=bench.phone, mtu=mtu, timeout=WAIT, **extra
    )


def next_change(bench: Bench) -> bytes:
    """Commit one more keycard in the cloud (version 2); return its bundle from version 1."""
    bench.history.commit(
        upserts=[
            Credential(
                kind=CredentialKind.KEYCARD,
                credential_id=b"\x04visit2",
                card_key=fixed_bytes("visit card 2", 16),
            )
        ]
    )
    return bench.bundle(1, "visit update")


async def visit(
    bench: Bench, store: PhoneStore, factory: ClientFactory | None = None, **kwargs: Any
) -> VisitReport:
    kwargs.setdefault("credential", credential(bench))
    async with asyncio.timeout(4 * WAIT):
        return await visit_door(
            factory or clients(bench),
            phone_key=bench.phone_key,
            store=store,
            wall_time=lambda: NOW,
            **kwargs,
        )


def applied(bench: Bench, version: int) -> int:
    """How many times the lock logged applying *version*."""
    return sum(
        1
        for e in bench.runtime.controller.state.audit.events()
        if e.kind is AuditEventKind.BUNDLE_APPLIED and e.detail == version
    )


def audit_kinds(bench: Bench, report: VisitReport) -> list[AuditEventKind]:
    key = bench.identity.identity_key().public_key()
    return [
        event.kind
        for frame in report.audit_batches
        for event in AuditBatch.verified_from_bytes(payload(frame), key).events
    ]


# --- the visit ------------------------------------------------------------------------------


async def test_visit_unlocks_and_delivers_the_prefetched_bundle(
    bench: Bench, store: PhoneStore
) -> None:
    store.keep_bundles({bench.identity.door_id.hex(): next_change(bench)}, now=NOW)
    report = await visit(bench, store)

    assert report.door_id == bench.identity.door_id
    assert report.battery_pct is not None and 0 <= report.battery_pct <= 100
    assert report.reason is Reason.GRANTED and report.opened
    assert bench.energised == [ControllerConfig().unlock_seconds]
    assert (report.version_before, report.version_after) == (1, 2)
    assert bench.runtime.controller.state.held.version == 2 and applied(bench, 2) == 1
    assert report.receipt is not None
    receipt = Receipt.verified_from_bytes(
        payload(report.receipt), bench.identity.identity_key().public_key()
    )
    assert receipt.status is ReceiptStatus.OK and receipt.list_version == 2
    assert receipt.list_digest == bench.history.current.digest
    kinds = audit_kinds(bench, report)
    assert AuditEventKind.PHONE_DECISION in kinds and kinds[-1] is AuditEventKind.BUNDLE_APPLIED
    queued = store.uploads()
    assert [(u.kind, u.frame) for u in queued] == [
        (UploadKind.RECEIPT, report.receipt),
        *((UploadKind.AUDIT, frame) for frame in report.audit_batches),
    ]
    assert {u.door_id for u in queued} == {bench.identity.door_id.hex()}
    assert {"connect", "hello", "auth", "bundle", "audit", "disconnect"} <= set(report.timings)
    assert not bench.phone.connections  # the visit disconnected


async def test_visit_with_no_bundle_just_unlocks(bench: Bench, store: PhoneStore) -> None:
    report = await visit(bench, store)
    assert report.reason is Reason.GRANTED and report.opened
    assert not report.bundle_sent and report.receipt is None
    assert report.version_before == report.version_after == 1
    assert bench.runtime.frames_of(MessageType.BUNDLE) == 1  # only the bench's grant
    assert [u.kind for u in store.uploads()] == [UploadKind.AUDIT] * len(report.audit_batches)
    assert report.audit_batches


async def test_sync_only_visit_applies_the_bundle_without_opening(
    bench: Bench, store: PhoneStore
) -> None:
    store.keep_bundles({bench.identity.door_id.hex(): next_change(bench)}, now=NOW)
    report = await visit(bench, store, intent=Intent.SYNC_ONLY)
    assert report.reason is Reason.GRANTED and not report.opened
    assert bench.energised == []
    assert report.version_after == 2 and applied(bench, 2) == 1
    assert AuditEventKind.BUNDLE_APPLIED in audit_kinds(bench, report)


async def test_held_audit_ack_is_delivered_and_frees_the_events(
    bench: Bench, store: PhoneStore
) -> None:
    first = await visit(bench, store)
    key = bench.identity.identity_key().public_key()
    last = AuditBatch.verified_from_bytes(payload(first.audit_batches[-1]), key).last_seq
    ack = AuditAck(door_id=bench.identity.door_id, key_epoch=0, up_to_seq=last).signed(
        bench.world.cloud_key
    )
    report = await visit(bench, store, audit_ack=ack.to_frame())
    assert report.audit_ack_delivered and report.errors == []
    assert all(e.seq > last for e in bench.runtime.controller.state.audit.events())


# --- refusals -------------------------------------------------------------------------------


async def test_bundle_altered_in_the_phone_store_is_refused_and_reported(
    bench: Bench, store: PhoneStore
) -> None:
    door = bench.identity.door_id.hex()
    store.keep_bundles({door: next_change(bench)}, now=NOW)
    version, message_type, body = decode_frame(store.bundles()[0].frame)
    altered = bytearray(body)
    altered[100] ^= 0x01  # a ciphertext byte; the frame checksum is recomputed
    with sqlite3.connect(store.path) as db:
        db.execute(
            "UPDATE bundle SET frame = ? WHERE door_id = ?",
            (encode_frame(message_type, bytes(altered), version), door),
        )
    report = await visit(bench, store)

    refused = report.bundle_refused
    assert refused is not None and refused.code is ErrorCode.AUTH_FAILED
    assert report.receipt is None and report.version_after == 1
    assert report.reason is Reason.GRANTED  # the unlock itself went through
    assert bench.runtime.controller.state.held.version == 1 and applied(bench, 2) == 0
    assert all(u.kind is UploadKind.AUDIT for u in store.uploads())


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("forged by another cloud key", Reason.BAD_SIGNATURE),
        ("for another door", Reason.WRONG_DOOR),
        ("for an unknown person", Reason.UNKNOWN_CREDENTIAL),
    ],
)
async def test_wrong_credential_gets_a_refused_reason(
    bench: Bench, store: PhoneStore, case: str, reason: Reason
) -> None:
    wrong = {
        "forged by another cloud key": credential(
            bench, cloud_key=ed25519_private_from_seed(fixed_bytes("not the cloud"))
        ),
        "for another door": credential(bench, door_id=fixed_bytes("another door", 16)),
        "for an unknown person": credential(bench, person=fixed_bytes("stranger", 16)),
    }[case]
    report = await visit(bench, store, credential=wrong.to_bytes())
    assert report.reason is reason and not report.opened
    assert bench.energised == []
    assert report.audit_batches == []  # no audit for an unauthenticated session


async def test_refused_phone_still_delivers_the_bundle(bench: Bench, store: PhoneStore) -> None:
    store.keep_bundles({bench.identity.door_id.hex(): next_change(bench)}, now=NOW)
    stranger = credential(bench, person=fixed_bytes("stranger", 16))
    report = await visit(bench, store, credential=stranger)
    assert report.reason is Reason.UNKNOWN_CREDENTIAL
    assert report.version_after == 2 and applied(bench, 2) == 1
    assert [u.kind for u in store.uploads()] == [UploadKind.RECEIPT]


# --- a dropped link -------------------------------------------------------------------------


class DroppingClient(BumbleClient):
    """A bumble backend that drops the link after *drop_after* segments of a BUNDLE transfer,
    logging every segment it writes to ``rx`` into *written*."""

    def __init__(
        self, *args: Any, drop_after: int, written: list[Segment] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._drop_after = drop_after
        self._log = [] if written is None else written
        self._bundle_transfer: int | None = None
        self._written = 0

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        await super().write_gatt_char(characteristic, data, response)
        if characteristic.uuid != CHAR_RX_UUID:
            return
        segment = Segment.from_bytes(bytes(data))
        self._log.append(segment)
        if segment.index == 0 and segment.data[3] == MessageType.BUNDLE:
            self._bundle_transfer = segment.transfer_id
        if segment.transfer_id == self._bundle_transfer:
            self._written += 1
            if self._written == self._drop_after:
                await self.disconnect()


BUNDLE_SEGMENTS_AT_23 = -(-224 // max_chunk(23))


@pytest.mark.parametrize("drop_after", range(1, BUNDLE_SEGMENTS_AT_23))
async def test_link_dropped_mid_bundle_resumes_on_the_next_visit_and_applies_once(
    bench: Bench, store: PhoneStore, drop_after: int
) -> None:
    bundle = next_change(bench)
    assert len(bundle) == 224
    store.keep_bundles({bench.identity.door_id.hex(): bundle}, now=NOW)
    session = LinkSession()
    first: list[Segment] = []
    cut = clients(bench, mtu=23, backend=DroppingClient, drop_after=drop_after, written=first)
    with pytest.raises(VisitError, match=f"send bundle: segment {drop_after + 1}/") as caught:
        await visit(bench, store, cut, session=session)
    assert caught.value.report.reason is Reason.GRANTED
    assert bench.runtime.controller.state.held.version == 1
    (transfer_id,) = {
        s.transfer_id for s in first if s.index == 0 and s.data[3] == MessageType.BUNDLE
    }

    second: list[Segment] = []
    full = clients(bench, mtu=23, backend=DroppingClient, drop_after=-1, written=second)
    report = await visit(bench, store, full, session=session)
    assert report.resumed and report.resumed_from == drop_after
    resent = [s.index for s in second if s.transfer_id == transfer_id]
    assert resent == list(range(drop_after, BUNDLE_SEGMENTS_AT_23))  # nothing sent twice
    assert report.version_after == 2
    assert bench.runtime.frames_of(MessageType.BUNDLE) == 2  # the bench's grant, then this once
    assert applied(bench, 2) == 1
    assert report.reason is Reason.GRANTED
    assert [u.kind for u in store.uploads()].count(UploadKind.RECEIPT) == 1


async def test_changed_mtu_restarts_the_transfer_with_a_new_id(
    bench: Bench, store: PhoneStore
) -> None:
    store.keep_bundles({bench.identity.door_id.hex(): next_change(bench)}, now=NOW)
    session = LinkSession()
    cut = clients(bench, mtu=23, backend=DroppingClient, drop_after=3)
    with pytest.raises(VisitError, match="send bundle"):
        await visit(bench, store, cut, session=session)
    report = await visit(bench, store, clients(bench, mtu=247), session=session)
    assert not report.resumed and report.resumed_from is None
    assert report.version_after == 2 and applied(bench, 2) == 1


# --- the link alone -------------------------------------------------------------------------


def test_transfer_ids_start_at_a_random_value_and_skip_the_locks_last() -> None:
    session = LinkSession(random=lambda n: b"\xbe\xef"[:n])
    assert session.new_transfer_id(avoid=None) == 0xBEEF
    assert session.new_transfer_id(avoid=0xBEF0) == 0xBEF1
    wrapped = LinkSession(random=lambda n: b"\xff\xff"[:n])
    assert [wrapped.new_transfer_id(None), wrapped.new_transfer_id(None)] == [0xFFFF, 0]


async def test_receive_timeout_names_the_step(bench: Bench) -> None:
    client = clients(bench)(lambda _c: None)
    async with client:
        link = FrameLink(client, LinkSession())  # never opened: the lock sends no HELLO
        with pytest.raises(LinkTimeoutError, match=r"^hello: no answer within 0.05 s"):
            await link.receive("hello", timeout=0.05)


async def test_connect_failure_is_a_visit_error_naming_connect(
    bench: Bench, store: PhoneStore
) -> None:
    absent: ClientFactory = lambda closed: BleakClient(  # noqa: E731
        "F0:00:00:00:00:99", closed, backend=BumbleClient, central=bench.phone, timeout=0.05
    )
    config = VisitConfig(connect_attempts=2, connect_backoff_s=0.01)
    with pytest.raises(VisitError, match=r"^connect: .*\(attempt 2 of 2\)$") as caught:
        await visit(bench, store, absent, config=config)
    assert caught.value.step == "connect" and caught.value.report.reason is None
