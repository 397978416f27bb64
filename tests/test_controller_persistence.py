"""The controller across power cycles, and against hostile bytes.

Theory of operation: a :class:`tests.controller_harness.LockRig` collects every
:class:`PersistSnapshot` and :class:`PersistTransaction` the core emits in an
in-memory flash. Restart tests boot a new core from that flash and compare the
persistent state with the state before the cut; counters (boot count, audit
sequence, time-sync sequence, key epoch) must never go back. Power-cut tests boot
from every prefix of the writes and require the state before or after each event,
never a mix.

Hostile-input tests feed random bytes and mutated valid frames (``tests.fuzzing``
mutators: bit flips, truncations, splices, re-framed payloads with a correct CRC)
as :class:`FrameReceived` on a BLE connection and on MQTT. The contract: no
exception escapes; every answer decodes; an input that is not byte-identical to a
valid frame is answered by one ERROR frame (or, for an AUTH, a refusing
UNLOCK_RESULT whose decision is logged) and leaves the persistent state as it was.
Corrupt snapshots and journals fed to :meth:`Controller.boot` raise
:class:`CorruptStateError` and nothing else.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.config import ControllerConfig
from controller.core import Controller
from controller.events import (
    MQTT,
    AccessDecided,
    CardAnswered,
    CardTapped,
    Channel,
    Connected,
    Disconnected,
    Energise,
    PersistSnapshot,
    PersistTransaction,
    Send,
)
from controller.state import (
    AuditAppended,
    BatteryUsed,
    CorruptStateError,
    ListChanged,
    LockState,
    encode_transaction,
)
from protocol import (
    REGISTRY,
    AuditEvent,
    AuditEventKind,
    CredentialStatus,
    ErrorCode,
    ErrorMessage,
    Intent,
    KeyRotation,
    MessageType,
    MobileCredential,
    Reason,
    UnlockResult,
    decode_message,
)
from protocol.frame import encode_frame
from simulators.fixture import fixed_bytes
from tests.controller_harness import (
    DAY,
    WORLD,
    CountingRandom,
    LockRig,
    Outcome,
    View,
    card_entry,
    keycard,
    person_entry,
    phone_key,
)
from tests.fuzzing import mutations

CARD, OTHER_CARD = keycard(1), keycard(2)
PERSON = 1


def _busy_rig(config: ControllerConfig | None = None) -> LockRig:
    """A lock that has done a bit of everything that persists."""
    rig = LockRig.provision(card_entry(CARD), person_entry(PERSON), config=config)
    channel, hello = rig.connect()
    assert rig.tap(CARD).reason is Reason.GRANTED
    assert rig.auth(channel, _credential(rig), phone_key(PERSON)).reason is Reason.GRANTED
    rig.load(card_entry(OTHER_CARD), channel=channel)
    rig.deliver(rig.cloud.time_sync(rig.lock_time + 90, challenge=hello.challenge))
    rig.advance(42)
    rig.disconnect(channel)
    rig.deliver(rig.cloud.audit_ack(3))
    rig.deliver(rig.cloud.rotate())
    rig.deliver(rig.cloud.time_sync(rig.lock_time - 20))
    rig.load(card_entry(CARD, status=CredentialStatus.REVOKED))
    assert rig.tap(CARD).reason is Reason.REVOKED
    return rig


def _credential(rig: LockRig, person: int = PERSON) -> MobileCredential:
    return rig.cloud.mobile_credential(
        person, valid_from=rig.lock_time - DAY, valid_until=rig.lock_time + DAY
    )


# --- restart --------------------------------------------------------------------------------


def test_reboot_restores_the_persistent_state() -> None:
    rig = _busy_rig()
    before = rig.view
    assert (before.key_epoch, before.time_sync_seq, before.list_version) == (1, 2, 3)
    assert before.battery_used_mah > 0.15  # two unlocks and 42 s of radio
    rig.reboot(after=5)
    after = rig.view
    assert after.list_digest == before.list_digest
    assert (after.list_version, after.list_changed_at) == (3, before.list_changed_at)
    assert after.audit_events[:-1] == before.audit_events
    boot = after.audit_events[-1]
    assert isinstance(boot, AuditEvent)
    assert (boot.kind, boot.seq, boot.detail) == (
        AuditEventKind.BOOT,
        before.audit_head + 1,
        before.boot_count + 1,
    )
    assert (after.clock_offset, after.time_sync_seq) == (before.clock_offset, 2)
    assert (after.key_epoch, after.cloud_key) == (1, rig.cloud.public_key)
    assert after.battery_used_mah == before.battery_used_mah
    assert after.boot_count == before.boot_count + 1


def test_a_rebooted_lock_behaves_as_before() -> None:
    rig = _busy_rig()
    rig.reboot()
    assert rig.tap(OTHER_CARD).reason is Reason.GRANTED
    assert rig.tap(CARD).reason is Reason.REVOKED
    assert rig.phone_unlock(PERSON).reason is Reason.GRANTED  # with a new-epoch credential
    old = rig.cloud.time_sync(rig.lock_time, sequence=2)
    assert rig.deliver(old).errors == [ErrorCode.STALE]
    assert rig.deliver(rig.cloud.rotation(1)).errors == []  # the applied one: a no-op
    fork = KeyRotation.create(
        current_key=WORLD.cloud_key_at(0), new_key=WORLD.cloud_key_at(55), new_epoch=1
    )
    assert rig.deliver(fork.to_frame()).errors == [ErrorCode.KEY_ROTATION_ORDER]
    assert rig.view.cloud_key == rig.cloud.public_key
    _, hello = rig.connect()
    assert (hello.list_version, hello.key_epoch) == (3, 1)
    assert hello.audit_head_seq == rig.view.audit_head


def test_counters_never_go_back_across_many_reboots() -> None:
    config = ControllerConfig(snapshot_every=4)
    rig = LockRig.provision(card_entry(CARD), person_entry(PERSON), config=config)
    last = rig.view
    generator = random.Random(7)
    for n in range(40):
        for _ in range(generator.randrange(4)):
            rig.tap(CARD if generator.random() < 0.7 else OTHER_CARD)
        if n % 5 == 0:
            rig.deliver(rig.cloud.time_sync(rig.lock_time + generator.randrange(-60, 60)))
        if n % 7 == 0:
            rig.deliver(rig.cloud.audit_ack(rig.view.audit_head))
        if n == 20:
            rig.deliver(rig.cloud.rotate())
        rig.reboot(after=generator.random() * 10)
        now = rig.view
        assert now.boot_count == last.boot_count + 1
        assert now.audit_head > last.audit_head
        assert now.time_sync_seq >= last.time_sync_seq
        assert now.key_epoch >= last.key_epoch
        assert now.list_version >= last.list_version
        assert now.battery_used_mah >= last.battery_used_mah
        _, hello = rig.connect()
        assert hello.audit_head_seq == now.audit_head
        last = now
    assert last.boot_count == 41 and last.key_epoch == 1


def test_snapshot_compaction_then_reboot() -> None:
    config = ControllerConfig(snapshot_every=3)
    rig = _busy_rig(config)
    snapshots = [a for a in rig.log if isinstance(a, PersistSnapshot)]
    assert len(snapshots) >= 4  # provisioning's, then one every third transaction
    assert len(rig.flash.transactions) < config.snapshot_every
    before = rig.view
    assert rig.durable_view() == before
    rig.reboot()
    assert rig.view.list_digest == before.list_digest
    assert rig.view.audit_events[:-1] == before.audit_events
    for _ in range(10):
        rig.tap(OTHER_CARD)
        assert len(rig.flash.transactions) < config.snapshot_every
        assert rig.durable_view() == rig.view


def test_reboot_straight_after_provisioning() -> None:
    rig = LockRig.provision()
    assert len(rig.flash.transactions) == 1  # the first BOOT
    rig.reboot()
    assert (rig.view.boot_count, rig.view.audit_head, rig.view.list_version) == (2, 2, 0)


def test_reboot_from_a_journal_longer_than_snapshot_every() -> None:
    """A flash whose compaction was lost still boots, and compacts at the next write."""
    config = ControllerConfig(snapshot_every=4)
    rig = LockRig.provision(card_entry(CARD), config=config)
    for _ in range(10):
        rig.tap(CARD)
    kept = [a.data for a in rig.log if isinstance(a, PersistTransaction)]
    first = next(a.data for a in rig.log if isinstance(a, PersistSnapshot))
    before = rig.view
    controller, actions = Controller.boot(
        first, kept, config, random=CountingRandom("other"), now=rig.now + 1
    )
    assert View.of(controller.state).audit_events[:-1] == before.audit_events
    assert any(isinstance(a, PersistSnapshot) for a in actions)


# --- power cuts -----------------------------------------------------------------------------


def test_power_cut_at_any_write_leaves_the_state_before_or_after_each_event() -> None:
    config = ControllerConfig(snapshot_every=3)
    rig = LockRig.provision(card_entry(CARD), person_entry(PERSON), config=config)
    channel, hello = rig.connect()
    events: list[Callable[[], Outcome]] = [
        lambda: rig.tap(CARD),
        lambda: rig.auth(channel, _credential(rig), phone_key(PERSON)),
        lambda: rig.load(card_entry(OTHER_CARD), card_entry(keycard(3)), channel=channel),
        lambda: rig.load(card_entry(CARD, status=CredentialStatus.REVOKED)),
        lambda: rig.deliver(rig.cloud.time_sync(rig.lock_time + 30, challenge=hello.challenge)),
        lambda: rig.deliver(rig.cloud.audit_ack(4)),
        lambda: rig.deliver(rig.cloud.rotate()),
        lambda: rig.disconnect(channel),
    ]
    cuts = 0
    for event in events:
        snapshot, transactions = rig.flash.snapshot, list(rig.flash.transactions)
        before = View.of(_replay(snapshot, transactions, config))
        outcome = event()
        after = rig.view
        for action in outcome.persisted:
            if isinstance(action, PersistSnapshot):
                snapshot, transactions = action.data, []
            else:
                transactions.append(action.data)
            cuts += 1
            assert View.of(_replay(snapshot, transactions, config)) in (before, after)
        assert View.of(_replay(snapshot, transactions, config)) == after
    assert cuts >= len(events)


def _replay(snapshot: bytes, transactions: list[bytes], config: ControllerConfig) -> LockState:
    return LockState.replay(snapshot, transactions, audit_capacity=config.audit_capacity)


# --- corrupt flash --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flash_image() -> tuple[bytes, list[bytes]]:
    rig = _busy_rig(ControllerConfig(snapshot_every=1_000))
    return rig.flash.snapshot, list(rig.flash.transactions)


def _boot(snapshot: bytes, transactions: list[bytes]) -> Controller:
    controller, _ = Controller.boot(
        snapshot, transactions, ControllerConfig(), random=CountingRandom(), now=5_000.0
    )
    return controller


def _crafted_cases(image: tuple[bytes, list[bytes]]) -> dict[str, tuple[bytes, list[bytes]]]:
    snapshot, txns = image
    state = _replay(snapshot, [], ControllerConfig())
    next_seq = state.audit.next_seq
    wrong_digest = ListChanged(state.held.version + 1, bytes(32), 0, ())
    gap = AuditEvent(seq=next_seq + 1, time=0, kind=AuditEventKind.BOOT)
    return {
        "empty snapshot": (b"", []),
        "snapshot cut short": (snapshot[:-1], []),
        "snapshot with a trailing byte": (snapshot + b"\x00", []),
        "snapshot with another magic": (b"LKS2" + snapshot[4:], []),
        "snapshot of garbage": (fixed_bytes("garbage", len(snapshot)), []),
        "journal cut short": (snapshot, [*txns[:-1], txns[-1][:-3]]),
        "journal with another magic": (snapshot, [b"LKT2" + txns[0][4:]]),
        "journal record of an unknown tag": (snapshot, [b"LKT1\x00\x00\x00\x01\x63\x00"]),
        "journal that skips an audit seq": (snapshot, [encode_transaction([AuditAppended(gap)])]),
        "journal list change off its digest": (snapshot, [encode_transaction([wrong_digest])]),
        "journal replayed twice": (snapshot, [*txns, *txns]),
        "journal empty transaction bytes": (snapshot, [b""]),
    }


def test_corrupt_flash_images_raise_corrupt_state_error(
    flash_image: tuple[bytes, list[bytes]],
) -> None:
    for name, (snapshot, transactions) in _crafted_cases(flash_image).items():
        with pytest.raises(CorruptStateError):
            _boot(snapshot, transactions)
            pytest.fail(f"booted from {name}")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_an_impossible_battery_reading_is_corrupt(
    flash_image: tuple[bytes, list[bytes]], value: float
) -> None:
    snapshot, transactions = flash_image
    with pytest.raises(CorruptStateError):
        _boot(snapshot, [*transactions, encode_transaction([BatteryUsed(value)])])


def test_mutated_flash_images_boot_or_raise_corrupt_state_error(
    flash_image: tuple[bytes, list[bytes]],
) -> None:
    snapshot, transactions = flash_image
    generator = random.Random(2024)
    outcomes: Counter[str] = Counter()
    snapshots = mutations(11, [snapshot])
    journals = mutations(12, transactions)
    for n in range(3_000):
        if n % 2:
            image = (next(snapshots), transactions)
        else:
            mutated = list(transactions)
            mutated[generator.randrange(len(mutated))] = next(journals)
            image = (snapshot, mutated)
        try:
            controller = _boot(*image)
        except CorruptStateError:
            outcomes["corrupt"] += 1
            continue
        outcomes["booted"] += 1
        _exercise(controller)  # whatever booted must work
    assert outcomes["corrupt"] > 1_000 and outcomes["booted"] > 10, outcomes


def _exercise(controller: Controller) -> None:
    """Use a booted lock: a HELLO, a tap, an AUTH-less session, a disconnect."""
    channel = Channel("ble", 1)
    for event in (
        Connected(channel),
        CardTapped(CARD.uid),
        CardAnswered(CARD.uid, bytes(16)),
        Disconnected(channel),
        Connected(MQTT),
    ):
        for action in controller.handle(event, 5_001.0):
            if isinstance(action, Send):
                decode_message(action.frame)


# --- hostile frames -------------------------------------------------------------------------

FUZZ_CONFIG = ControllerConfig(audit_capacity=400, capacity=100)
LOCK_ONLY_TYPES = {
    MessageType.HELLO,
    MessageType.UNLOCK_RESULT,
    MessageType.RECEIPT,
    MessageType.AUDIT_BATCH,
}


@dataclass(frozen=True)
class Light:
    """The persistent state that hostile input must not move (cheap to compare)."""

    list_version: int
    list_digest: bytes
    audit_head: int
    audit_pending: int
    audit_lost: int
    clock_offset: int
    time_sync_seq: int
    key_epoch: int
    boot_count: int

    @classmethod
    def of(cls, rig: LockRig) -> Light:
        s = rig.state
        return cls(
            s.held.version,
            s.held.digest,
            s.audit.head_seq,
            s.audit.pending,
            s.audit.lost,
            s.clock_offset,
            s.time_sync_seq,
            s.cloud.epoch,
            s.boot_count,
        )


class HostileBench:
    """A lock with an MQTT session and a BLE connection, and a corpus of valid frames."""

    def __init__(self) -> None:
        rig = LockRig.provision(card_entry(CARD), person_entry(PERSON), config=FUZZ_CONFIG)
        mqtt_hello = rig.connect_mqtt()
        self.ble, hello = rig.connect(1)
        cloud = rig.cloud
        duplicate = cloud.bundle(0)
        cloud.commit(card_entry(OTHER_CARD))
        fresh, fresh_from_zero = cloud.bundle(1), cloud.bundle(0)
        cloud.commit(card_entry(keycard(3)))
        ahead = cloud.bundle(2)  # BASE_VERSION until v2 is applied, then it applies
        credential = _credential(rig)
        t = rig.lock_time
        self.corpus = [
            duplicate,
            fresh,
            fresh_from_zero,
            ahead,
            cloud.bundle(0, key=WORLD.cloud_key_at(99)),
            rig.auth_frame(credential, phone_key(PERSON), challenge=hello.challenge),
            rig.auth_frame(
                credential, phone_key(PERSON), challenge=hello.challenge, intent=Intent.SYNC_ONLY
            ),
            rig.auth_frame(credential, phone_key(7), challenge=hello.challenge),
            cloud.time_sync(t + 100),
            cloud.time_sync(t - 50, challenge=mqtt_hello.challenge),
            cloud.time_sync(t, sequence=1),
            cloud.audit_ack(2),
            cloud.rotation(2),
            cloud.rotation(1, signer=WORLD.cloud_key_at(99)),
            ErrorMessage(code=ErrorCode.ROLLBACK, about_type=4, detail="x").to_frame(),
            hello.to_frame(),
            UnlockResult(
                door_id=rig.door_id, reason=Reason.GRANTED, open_seconds=5, audit_seq=1
            ).to_frame(),
        ]
        self.valid = set(self.corpus)
        self.rig = rig
        self.outcomes: Counter[str] = Counter()

    def reconnect(self) -> None:
        self.rig.disconnect(self.ble)
        self.rig.connect(self.ble.number)

    def feed(self, data: bytes, channel: Channel) -> None:
        """Deliver one input and check the hostile-input contract."""
        before = Light.of(self.rig)
        outcome = self.rig.deliver(data, channel)
        after = Light.of(self.rig)
        valid = data in self.valid
        answers = self._answers(outcome, channel, valid=valid)
        if valid:
            for m in answers:
                name = m.code.name if isinstance(m, ErrorMessage) else type(m).__name__
                self.outcomes[f"valid frame -> {name}"] += 1
            return
        if any(isinstance(m, UnlockResult) for m in answers):
            self._check_refused_auth(data, channel, answers, outcome, before, after)
            return
        assert all(isinstance(m, ErrorMessage) for m in answers), answers
        assert len(answers) <= 1, answers
        assert not outcome.decisions and not outcome.energised
        assert after == before, (data.hex(), answers)
        if answers:
            assert isinstance(answers[0], ErrorMessage)
            self.outcomes[answers[0].code.name] += 1
        else:
            assert data[3:4] == bytes([MessageType.ERROR]), data.hex()
            self.outcomes["ignored ERROR frame"] += 1

    def _answers(self, outcome: Outcome, channel: Channel, *, valid: bool) -> list[object]:
        """The frames sent (each must decode); only a valid AUTH may energise the door."""
        messages = []
        for action in outcome.actions:
            if isinstance(action, Send):
                assert action.channel == channel
                messages.append(decode_message(action.frame))
            elif not (valid and isinstance(action, Energise)):
                assert isinstance(action, PersistTransaction | PersistSnapshot | AccessDecided)
        return messages

    def _check_refused_auth(
        self,
        data: bytes,
        channel: Channel,
        answers: list[object],
        outcome: Outcome,
        before: Light,
        after: Light,
    ) -> None:
        [result] = answers
        assert isinstance(result, UnlockResult)
        assert channel.transport == "ble" and data[3] == MessageType.AUTH
        assert result.reason is not Reason.GRANTED and result.open_seconds == 0
        assert outcome.reasons == [result.reason] and outcome.energised == []
        logged = (after.audit_head - before.audit_head) + (after.audit_lost - before.audit_lost)
        assert logged == 1  # the refusal is logged (or counted lost if the ring is full)
        assert (after.list_digest, after.clock_offset, after.key_epoch, after.time_sync_seq) == (
            before.list_digest,
            before.clock_offset,
            before.key_epoch,
            before.time_sync_seq,
        )
        self.outcomes[f"AUTH refused: {result.reason.name}"] += 1


def test_hostile_frames_seeded_loop() -> None:
    bench = HostileBench()
    stream = mutations(20_250, bench.corpus)
    for n in range(20_000):
        if n % 997 == 996:
            bench.reconnect()
        bench.rig.advance(0.05)  # lockouts run out now and then: AUTH checks go deeper
        bench.feed(next(stream), MQTT if n % 2 else bench.ble)
    seen = bench.outcomes
    for expected in (
        "MALFORMED",
        "AUTH_FAILED",
        "TOO_LARGE",
        "UNSUPPORTED_VERSION",
        "KEY_ROTATION_ORDER",
        "AUTH refused: BAD_SIGNATURE",
        "ignored ERROR frame",
        "valid frame -> STALE",
        "valid frame -> Receipt",
        "valid frame -> UnlockResult",
    ):
        assert seen[expected] > 0, (expected, seen)
    print(sorted(seen.items()))
    assert bench.rig.view.boot_count == 1


@st.composite
def _mutated_frames(draw: st.DrawFn) -> bytes:
    frame = draw(st.sampled_from(_bench().corpus))
    how = draw(st.sampled_from(["flip", "truncate", "reframe", "extend"]))
    if how == "flip":
        out = bytearray(frame)
        for bit in draw(st.lists(st.integers(0, 8 * len(frame) - 1), min_size=1, max_size=4)):
            out[bit // 8] ^= 1 << bit % 8
        return bytes(out)
    if how == "truncate":
        return frame[: draw(st.integers(0, len(frame) - 1))]
    if how == "extend":
        return frame + draw(st.binary(min_size=1, max_size=16))
    payload = bytearray(frame[8:-4])
    if payload:
        for at in draw(st.lists(st.integers(0, len(payload) - 1), min_size=1, max_size=3)):
            payload[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(payload)))
    kind = draw(st.sampled_from([frame[3], frame[3], *REGISTRY, 0, 0x7F]))
    return encode_frame(kind, bytes(payload[:cut]) + bytes(payload[cut + 1 :]))


_BENCH: list[HostileBench] = []


def _bench() -> HostileBench:
    if not _BENCH:
        _BENCH.append(HostileBench())
    return _BENCH[0]


@settings(
    max_examples=1_500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
@given(data=st.one_of(st.binary(max_size=400), _mutated_frames()), on_ble=st.booleans())
def test_hostile_frames_hypothesis(data: bytes, on_ble: bool) -> None:
    bench = _bench()
    bench.feed(data, bench.ble if on_ble else MQTT)


def test_frames_only_a_lock_sends_are_refused() -> None:
    bench = HostileBench()
    for data in bench.corpus:
        kind = MessageType(data[3])
        if kind in LOCK_ONLY_TYPES:
            before = Light.of(bench.rig)
            outcome = bench.rig.deliver(data, bench.ble)
            assert outcome.errors == [ErrorCode.MALFORMED]
            assert Light.of(bench.rig) == before
