"""Deterministic mutation fuzzing of every protocol parser (``docs/protocol.md`` §9).

Theory of operation: :data:`TARGETS` names every entry point that takes bytes from
the air — frame and message decoders, the credential list, change lists, BLE
segmentation, and the lock's and cloud's ordered checks (key rotation, audit
ledger, bundle apply) with fixture keys. :data:`CORPUS` holds valid encodings for
each target. :func:`mutations` turns a corpus into an endless, seeded stream of
bit flips, byte replacements, truncations, extensions, insertions, deletions,
splices of two encodings, integer (length-field) edits, re-framed payloads with a
correct CRC, unmutated seeds and pure random bytes.

The contract checked is the security model's "malformed or hostile bytes → a typed
protocol error, the state unchanged, never a crash": a target may return or raise a
:class:`~protocol.errors.ProtocolError`, but never a :class:`UsageError` (that means
local misuse, never bytes from the air) and never anything else. :func:`run` counts
outcomes per exception class and raises :class:`FuzzCrash` on the first violation.

Targets whose name ends in ``/resigned`` or ``/sealed`` sign (and seal) the fuzzed
bytes with the fixture keys first, so the fuzzer gets past the signature check into
the parsers and policy checks behind it. ``tests.fuzzing`` is importable by the
benchmark (``python -m bench fuzz``) to run millions of inputs.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial

from protocol import (
    REGISTRY,
    AuditAck,
    AuditBatch,
    AuditEvent,
    AuditEventKind,
    AuditLedger,
    Auth,
    CloudKeyState,
    Credential,
    CredentialHistory,
    CredentialKind,
    CredentialList,
    ErrorCode,
    ErrorMessage,
    Hello,
    Intent,
    KeyRotation,
    Limits,
    Message,
    MobileCredential,
    ProtocolError,
    Reason,
    ScopeKind,
    SealedBundle,
    TimeSync,
    UnlockResult,
    UsageError,
    Window,
    apply_bundle,
    decode_message,
    make_receipt,
)
from protocol.bundle import decode_changes, encode_changes
from protocol.crypto import SignContext, public_bytes, seal, sign
from protocol.errors import TooLargeError
from protocol.frame import MAGIC, Frame, encode_frame
from protocol.segmentation import Reassembler, Segment, SegmentAck, segment_frame
from simulators.fixture import World, fixed_bytes

__all__ = ["CORPUS", "TARGETS", "FuzzCrash", "mutations", "run", "run_target"]

Target = Callable[[bytes], object]

# --- the fixture world ---------------------------------------------------------------------

WORLD = World()
DOOR = WORLD.door("fuzz")
CLOUD_KEY = WORLD.cloud_key
PHONE_KEY = WORLD.cloud_key_at(1_000)  # any fixed Ed25519 key
CHALLENGE = fixed_bytes("fuzz challenge", 16)
SEGMENT_LIMITS = Limits(max_frame_payload=600, max_segments=64)
SMALL_LIMITS = Limits(
    max_frame_payload=256,
    max_list_entries=2,
    max_audit_events=3,
    max_scope_doors=1,
    max_error_detail=4,
    max_segments=4,
)
LEDGER_NEXT_SEQ = 5
KEY_STATE = CloudKeyState(epoch=0, public_key=public_bytes(CLOUD_KEY))


def _card(n: int, **fields: object) -> Credential:
    key = fixed_bytes(f"fuzz card key {n}", 16)
    return Credential(
        kind=CredentialKind.KEYCARD, credential_id=bytes([n]) * 4, card_key=key, **fields
    )  # type: ignore[arg-type]


def _person(n: int) -> Credential:
    window = Window(days=0x1F, start_minute=420, end_minute=1140)
    return Credential(
        kind=CredentialKind.PERSON,
        credential_id=fixed_bytes(f"person {n}", 16),
        valid_from=1_000,
        valid_until=2_000_000_000,
        schedule=(window,),
    )


def _bundle(history: CredentialHistory, base: int) -> SealedBundle:
    version = history.current.version
    return history.bundle(
        base,
        door_public=DOOR.sealing.public_key(),
        cloud_key=CLOUD_KEY,
        key_epoch=0,
        ephemeral=WORLD.ephemeral(f"fuzz {base} {version}"),
    )


def _history() -> tuple[CredentialHistory, list[CredentialList], list[SealedBundle]]:
    """Versions 1-3 of the fuzzed door's list, and a bundle from every base to each."""
    history, lists, bundles = CredentialHistory(DOOR.door_id), [], []
    commits = [
        {"upserts": [_card(1), _card(2), _person(1)]},
        {"upserts": [_card(2, status=2), _card(3)]},
        {"removals": [_card(1).key], "upserts": [_person(2)]},
    ]
    for commit in commits:
        lists.append(history.commit(**commit))  # type: ignore[arg-type]
        bundles += [_bundle(history, base) for base in range(history.current.version)]
    return history, lists, bundles


HISTORY, LISTS, BUNDLES = _history()
CURRENT = LISTS[1]
"""The list the fuzzed lock holds (version 2): the bundles to version 1 are rollbacks,
those to version 2 idempotent no-ops, those to version 3 apply (from bases 0-2)."""
CAPACITY = len(LISTS[2])
EMPTY_LIST = CredentialList.empty(DOOR.door_id)
DELTAS = [HISTORY.delta(base) for base in range(3)]
"""The changes from versions 0, 1 and 2 to version 3."""


# --- sample messages ---------------------------------------------------------------------------


def _mobile_credential(scope: ScopeKind, ids: tuple[bytes, ...]) -> MobileCredential:
    return MobileCredential(
        key_epoch=0,
        credential_id=fixed_bytes("mc id", 16),
        person_id=fixed_bytes("person 1", 16),
        phone_public_key=public_bytes(PHONE_KEY),
        valid_from=1_000,
        valid_until=700_000,
        scope_kind=scope,
        scope_ids=ids,
    ).signed(CLOUD_KEY)


MOBILE_CREDENTIALS = [
    _mobile_credential(ScopeKind.DOORS, (DOOR.door_id, fixed_bytes("other door", 16))),
    _mobile_credential(ScopeKind.PROPERTY, (fixed_bytes("property", 16),)),
]


def _events(first: int, count: int) -> tuple[AuditEvent, ...]:
    kinds = list(AuditEventKind)
    return tuple(
        AuditEvent(
            seq=first + i,
            time=1_000 + i,
            kind=kinds[i % len(kinds)],
            reason=i % 3,
            credential_id=bytes([i]) * (i % 17),
            detail=i * 7,
        )
        for i in range(count)
    )


def _audit_batches() -> list[AuditBatch]:
    spans = [(LEDGER_NEXT_SEQ, 5), (1, 8), (1, 2), (LEDGER_NEXT_SEQ + 1, 1)]
    return [
        AuditBatch(door_id=DOOR.door_id, events=_events(first, count)).signed(DOOR.identity)
        for first, count in spans
    ]


def _session_messages() -> list[Message]:
    hello = Hello(
        door_id=DOOR.door_id,
        list_version=1,
        list_age_s=60,
        battery_pct=88,
        audit_head_seq=9,
        key_epoch=0,
        lock_time=1_000_000,
        challenge=CHALLENGE,
        supported_versions=(1,),
    )
    auths = [
        Auth.create(
            credential=mc,
            phone_key=PHONE_KEY,
            door_id=DOOR.door_id,
            challenge=CHALLENGE,
            intent=intent,
        )
        for mc, intent in zip(MOBILE_CREDENTIALS, Intent, strict=True)
    ]
    results = [
        UnlockResult(door_id=DOOR.door_id, reason=reason, open_seconds=seconds, audit_seq=9)
        for reason, seconds in [(Reason.GRANTED, 5), (Reason.REVOKED, 0)]
    ]
    errors = [
        ErrorMessage(code=ErrorCode.ROLLBACK, about_type=4, detail="version 1 < 3"),
        ErrorMessage(code=ErrorCode.NONE),
    ]
    return [hello, *auths, *results, *errors]


def _cloud_messages() -> list[Message]:
    rotations = [
        KeyRotation.create(
            current_key=WORLD.cloud_key_at(e - 1), new_key=WORLD.cloud_key_at(e), new_epoch=e
        )
        for e in (1, 2)
    ]
    times = [
        TimeSync(
            door_id=DOOR.door_id,
            key_epoch=0,
            sequence=s,
            cloud_time=1_000_000 + s,
            challenge=fixed_bytes(f"ts {s}", 16),
        ).signed(CLOUD_KEY)
        for s in (1, 2)
    ]
    ack = AuditAck(door_id=DOOR.door_id, key_epoch=0, up_to_seq=9).signed(CLOUD_KEY)
    return [*rotations, *times, ack, *BUNDLES]


def _lock_messages() -> list[Message]:
    receipts: list[Message] = [
        make_receipt(DOOR.identity, held, requested_version=3) for held in LISTS
    ]
    return [*receipts, *_audit_batches()]


MESSAGES: list[Message] = [*_session_messages(), *_cloud_messages(), *_lock_messages()]
FRAMES = [m.to_frame() for m in MESSAGES]


def _payloads(cls: type[Message]) -> tuple[bytes, ...]:
    return tuple(m.to_bytes() for m in MESSAGES if type(m) is cls)


def _bodies(cls: type[Message]) -> tuple[bytes, ...]:
    return tuple(p[:-64] for p in _payloads(cls))


def _segment_streams() -> list[list[bytes]]:
    streams = [segment_frame(f, mtu=23, transfer_id=i) for i, f in enumerate(FRAMES[:6])]
    streams += [segment_frame(f, mtu=247, transfer_id=100 + i) for i, f in enumerate(FRAMES)]
    return streams


def _records(segments: Sequence[bytes]) -> bytes:
    """Segments as ``len u8 || segment`` records (see :func:`_reassemble_stream`)."""
    return b"".join(bytes([len(s)]) + s for s in segments)


# --- targets ----------------------------------------------------------------------------------


def _apply(payload: bytes) -> object:
    return apply_bundle(
        CURRENT,
        payload,
        cloud_public=CLOUD_KEY.public_key(),
        door_private=DOOR.sealing,
        capacity=CAPACITY,
    )


def _apply_resigned(body: bytes) -> object:
    return _apply(body + sign(CLOUD_KEY, SignContext.BUNDLE, body))


SEALED_HEADER = SealedBundle(
    door_id=DOOR.door_id,
    key_epoch=0,
    base_version=1,
    target_version=3,
    target_digest=LISTS[2].digest,
    ephemeral_public=bytes(32),
    ciphertext=bytes(16),
)


def _apply_sealed(plaintext: bytes) -> object:
    """Seal ``plaintext`` as the changes of a valid, signed bundle and apply it."""
    ephemeral = WORLD.ephemeral("fuzz sealed")
    aad = SEALED_HEADER.associated_data()
    eph_public, ciphertext = seal(DOOR.sealing.public_key(), plaintext, aad, ephemeral)
    fields = {
        **SEALED_HEADER._to_container(),
        "ephemeral_public": eph_public,
        "ciphertext": ciphertext,
    }
    return _apply(SealedBundle(**fields).signed(CLOUD_KEY).to_bytes())


def _verify_auth(payload: bytes) -> object:
    """Lock side: parse AUTH, check the cloud's credential and the phone's proof."""
    auth = Auth.from_bytes(payload)
    auth.credential.verify(CLOUD_KEY.public_key())
    return auth.verify(door_id=DOOR.door_id, challenge=CHALLENGE)


def _verify_auth_resigned(body: bytes) -> object:
    """``body`` is a mobile credential body: the cloud signs it, the phone uses it."""
    signature = sign(CLOUD_KEY, SignContext.MOBILE_CREDENTIAL, body)
    credential = MobileCredential.from_bytes(body + signature)
    auth = Auth.create(
        credential=credential, phone_key=PHONE_KEY, door_id=DOOR.door_id, challenge=CHALLENGE
    )
    return _verify_auth(auth.to_bytes())


def _rotate(payload: bytes) -> object:
    return KEY_STATE.apply_rotation(payload)


def _rotate_resigned(body: bytes) -> object:
    return _rotate(body + sign(CLOUD_KEY, SignContext.KEY_ROTATION, body))


def _accept_audit(payload: bytes) -> object:
    ledger = AuditLedger(
        door_id=DOOR.door_id, lock_key=DOOR.identity.public_key(), next_seq=LEDGER_NEXT_SEQ
    )
    try:
        return ledger.accept(payload)
    except ProtocolError:
        _check(ledger.next_seq == LEDGER_NEXT_SEQ, "a refused audit batch moved the ledger")
        raise


def _accept_audit_resigned(body: bytes) -> object:
    return _accept_audit(body + sign(DOOR.identity, SignContext.AUDIT_BATCH, body))


def _receive_one(data: bytes) -> object:
    return Reassembler(limits=SEGMENT_LIMITS).receive(data)


def _reassemble_stream(data: bytes) -> object:
    """Feed ``len u8 || segment`` records to one reassembler; raise its first error.

    After an error the reassembler's state must be unchanged (unless it dropped an
    over-size transfer); later records are still fed.
    """
    reassembler, frames = Reassembler(limits=SEGMENT_LIMITS), []
    first_error: ProtocolError | None = None
    for record in _split_records(data):
        try:
            frames.append(_receive_checked(reassembler, record))
        except ProtocolError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return frames


def _split_records(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        end = offset + 1 + data[offset]
        yield data[offset + 1 : end]
        offset = end


def _receive_checked(reassembler: Reassembler, segment: bytes) -> bytes | None:
    before = (reassembler.transfer_id, reassembler.next_index, reassembler.ack())
    try:
        return reassembler.receive(segment)
    except TooLargeError:
        raise
    except ProtocolError:
        after = (reassembler.transfer_id, reassembler.next_index, reassembler.ack())
        _check(after == before, "a refused segment changed the reassembler")
        raise


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


TARGETS: dict[str, Target] = {
    "Frame.from_bytes": Frame.from_bytes,
    "decode_message": decode_message,
    "decode_message/small-limits": partial(decode_message, limits=SMALL_LIMITS),
    **{f"{cls.__name__}.from_bytes": cls.from_bytes for cls in REGISTRY.values()},
    "MobileCredential.from_bytes": MobileCredential.from_bytes,
    "CredentialList.from_bytes": CredentialList.from_bytes,
    "decode_changes": decode_changes,
    "decode_changes/small-limits": partial(decode_changes, limits=SMALL_LIMITS),
    "CredentialList.from_bytes/small-limits": partial(
        CredentialList.from_bytes, limits=SMALL_LIMITS
    ),
    "Auth.verify": _verify_auth,
    "Auth.verify/resigned": _verify_auth_resigned,
    "CloudKeyState.apply_rotation": _rotate,
    "CloudKeyState.apply_rotation/resigned": _rotate_resigned,
    "AuditLedger.accept": _accept_audit,
    "AuditLedger.accept/resigned": _accept_audit_resigned,
    "apply_bundle": _apply,
    "apply_bundle/resigned": _apply_resigned,
    "apply_bundle/sealed": _apply_sealed,
    "Segment.from_bytes": Segment.from_bytes,
    "SegmentAck.from_bytes": SegmentAck.from_bytes,
    "Reassembler.receive": _receive_one,
    "Reassembler.receive/stream": _reassemble_stream,
}
"""Every entry point for bytes from the air: name -> callable taking bytes."""

CORPUS: dict[str, tuple[bytes, ...]] = {
    "Frame.from_bytes": tuple(FRAMES),
    "decode_message": tuple(FRAMES),
    "decode_message/small-limits": tuple(FRAMES),
    **{f"{cls.__name__}.from_bytes": _payloads(cls) for cls in REGISTRY.values()},
    "MobileCredential.from_bytes": tuple(mc.to_bytes() for mc in MOBILE_CREDENTIALS),
    "CredentialList.from_bytes": tuple(lst.to_bytes() for lst in [*LISTS, EMPTY_LIST]),
    "decode_changes": tuple(encode_changes(c) for c in [*DELTAS, ()]),
    "decode_changes/small-limits": (encode_changes([]), encode_changes(DELTAS[2])),
    "CredentialList.from_bytes/small-limits": (EMPTY_LIST.to_bytes(),),
    "Auth.verify": _payloads(Auth),
    "Auth.verify/resigned": tuple(mc.to_bytes()[:-64] for mc in MOBILE_CREDENTIALS),
    "CloudKeyState.apply_rotation": _payloads(KeyRotation),
    "CloudKeyState.apply_rotation/resigned": _bodies(KeyRotation),
    "AuditLedger.accept": _payloads(AuditBatch),
    "AuditLedger.accept/resigned": _bodies(AuditBatch),
    "apply_bundle": _payloads(SealedBundle),
    "apply_bundle/resigned": _bodies(SealedBundle),
    "apply_bundle/sealed": (encode_changes(DELTAS[1]), encode_changes(DELTAS[0])),
    "Segment.from_bytes": tuple(s for stream in _segment_streams() for s in stream),
    "SegmentAck.from_bytes": tuple(
        SegmentAck(transfer_id=t, next_index=n).to_bytes()
        for t, n in [(0, 0), (7, 3), (0xFFFF, 0xFFFF)]
    ),
    "Reassembler.receive": tuple(stream[0] for stream in _segment_streams()),
    "Reassembler.receive/stream": tuple(_records(stream) for stream in _segment_streams()),
}
"""Valid inputs per target, the seeds of the mutations."""

WEIGHTS: dict[str, float] = {
    "Auth.verify": 0.5,
    "Auth.verify/resigned": 0.3,
    "CloudKeyState.apply_rotation/resigned": 0.3,
    "AuditLedger.accept/resigned": 0.3,
    "apply_bundle/resigned": 0.3,
    "apply_bundle/sealed": 0.15,
}
"""Relative share of :func:`run`'s inputs; 1 unless listed (the crypto-heavy ones are slower)."""


# --- mutations ----------------------------------------------------------------------------------

INTERESTING = (
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
)
Mutator = Callable[[random.Random, bytes, Sequence[bytes]], bytes]


def _flip_bits(rng: random.Random, data: bytes, _: Sequence[bytes]) -> bytes:
    out = bytearray(data)
    for _i in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _replace_bytes(rng: random.Random, data: bytes, _: Sequence[bytes]) -> bytes:
    out = bytearray(data)
    for _i in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return bytes(out)


def _truncate(rng: random.Random, data: bytes, _: Sequence[bytes]) -> bytes:
    cut = rng.randrange(len(data) + 1)
    return data[:cut] if rng.random() < 0.8 else data[cut:]


def _extend(rng: random.Random, data: bytes, _: Sequence[bytes]) -> bytes:
    if data and rng.random() < 0.5:
        start = rng.randrange(len(data))
        return data + data[start : start + rng.randint(1, 64)]
    return data + rng.randbytes(rng.randint(1, 64))


def _insert(rng: random.Random, data: bytes, _: Sequence[bytes]) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]


def _delete(rng: random.Random, data: bytes, _: Sequence[bytes]) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[at + rng.randint(1, 16) :]


def _splice(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    other = rng.choice(corpus)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


def _edit_int(rng: random.Random, data: bytes, _: Sequence[bytes]) -> bytes:
    """Overwrite a big-endian u8/u16/u32 (such as a length field) with an edge value."""
    width = rng.choice((1, 2, 4))
    if len(data) < width:
        return data
    at = rng.randrange(len(data) - width + 1)
    value = rng.choice((*INTERESTING, len(data), len(data) - at, len(data) - at - width))
    value = (value + rng.choice((-1, 0, 0, 1))) % (1 << 8 * width)
    return data[:at] + value.to_bytes(width, "big") + data[at + width :]


def _random_bytes(rng: random.Random, data: bytes, _: Sequence[bytes]) -> bytes:
    return rng.randbytes(rng.randint(0, max(2 * len(data), 64)))


def _reframe(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    """Mutate a frame's payload (or its type) and rebuild a frame with a correct CRC."""
    if len(data) < 12 or data[:2] != MAGIC:
        return _byte_mutation(rng, data, corpus)
    message_type = data[3] if rng.random() < 0.8 else rng.choice((*REGISTRY, 0, 0x7F))
    payload = _byte_mutation(rng, data[8:-4], [c[8:-4] for c in corpus])
    frame = encode_frame(message_type, payload)
    if rng.random() < 0.2:  # a length field that lies, with a CRC that does not
        frame = _edit_int(rng, frame[:8], corpus)[:8] + frame[8:-4]
        frame += zlib.crc32(frame).to_bytes(4, "big")
    return frame


BYTE_MUTATORS: tuple[Mutator, ...] = (
    _flip_bits,
    _replace_bytes,
    _truncate,
    _extend,
    _insert,
    _delete,
    _splice,
    _edit_int,
)


def _byte_mutation(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    return rng.choice(BYTE_MUTATORS)(rng, data, corpus)


def mutate(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    """One input derived from ``data``: unmutated (2%), random (8%), re-framed or havoc."""
    roll = rng.random()
    if roll < 0.02:
        return data
    if roll < 0.10:
        return _random_bytes(rng, data, corpus)
    if roll < 0.35:
        return _reframe(rng, data, corpus)
    for _i in range(1 + int(rng.expovariate(1.5))):
        data = _byte_mutation(rng, data, corpus)
    return data


def mutations(seed: int, corpus: Sequence[bytes] | None = None) -> Iterator[bytes]:
    """An endless deterministic stream of inputs mutated from ``corpus`` (default: all)."""
    seeds = list(corpus) if corpus is not None else sorted({s for c in CORPUS.values() for s in c})
    rng = random.Random(seed)
    while True:
        yield mutate(rng, rng.choice(seeds), seeds)


# --- running -------------------------------------------------------------------------------------


class FuzzCrash(AssertionError):
    """A target raised something other than a non-usage :class:`ProtocolError`."""

    def __init__(self, target: str, data: bytes, error: BaseException) -> None:
        super().__init__(f"{target} crashed on {data.hex()!r}: {error!r}")
        self.target = target
        self.data = data
        self.error = error


def outcome(target: Target, data: bytes) -> str:
    """``"ok"`` or the name of the :class:`ProtocolError` raised; re-raise anything else."""
    try:
        target(data)
    except UsageError:
        raise
    except ProtocolError as exc:
        return type(exc).__name__
    return "ok"


def run_target(
    name: str,
    count: int,
    seed: int,
    *,
    targets: Mapping[str, Target] = TARGETS,
    corpus: Mapping[str, Sequence[bytes]] = CORPUS,
) -> Counter[str]:
    """Feed ``count`` mutated inputs to one target; count the outcomes."""
    target, counts = targets[name], Counter[str]()
    stream = mutations(_target_seed(seed, name), corpus[name])
    for _i, data in zip(range(count), stream, strict=False):
        try:
            counts[outcome(target, data)] += 1
        except Exception as exc:
            raise FuzzCrash(name, data, exc) from exc
    return counts


def run(count: int, seed: int) -> dict[str, int]:
    """Feed ``count`` inputs across all targets (by :data:`WEIGHTS`); outcome -> count."""
    names = sorted(TARGETS)
    weights = [WEIGHTS.get(name, 1.0) for name in names]
    picks = Counter(random.Random(seed).choices(names, weights, k=count))
    total = Counter[str]()
    for name in names:
        total += run_target(name, picks[name], seed)
    return dict(sorted(total.items()))


def _target_seed(seed: int, name: str) -> int:
    return seed * 0x1_0000_0000 + zlib.crc32(name.encode())
