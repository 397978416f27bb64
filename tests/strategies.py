"""Hypothesis strategies for every protocol message and data structure.

Theory of operation: one strategy per type, built bottom-up from field strategies
that respect each constructor's checks (``__post_init__``), so every drawn value is
a valid instance. Signed messages come in two flavours:

* :data:`MESSAGES` — signatures are arbitrary 64-byte strings. Enough for round
  trips: ``from_bytes`` only parses.
* :data:`SIGNED_MESSAGES` — signed by the fixture key that signs that type in the
  real system (:func:`signer_of`), so ``verified_from_bytes`` accepts them.

Sizes stay small (lists of a few dozen entries) to keep the examples fast.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import strategies as st

from protocol import (
    DEFAULT_LIMITS,
    AuditAck,
    AuditBatch,
    AuditEvent,
    AuditEventKind,
    Auth,
    Credential,
    CredentialKind,
    CredentialList,
    CredentialStatus,
    ErrorCode,
    ErrorMessage,
    Hello,
    Intent,
    KeyRotation,
    Message,
    MessageType,
    MobileCredential,
    Reason,
    Receipt,
    ReceiptStatus,
    Remove,
    ScopeKind,
    SealedBundle,
    SignedMessage,
    TimeSync,
    UnlockResult,
    Upsert,
    Window,
)
from protocol.bundle import Change
from protocol.credential_list import MAX_SCHEDULE_WINDOWS
from protocol.crypto import ed25519_private_from_seed, public_bytes
from simulators.fixture import World, fixed_bytes

__all__ = [
    "MESSAGES",
    "PHONE_KEY",
    "SIGNED_MESSAGES",
    "SIGNING_DOOR",
    "audit_acks",
    "audit_batches",
    "audit_events",
    "auths",
    "change_lists",
    "changes",
    "credential_lists",
    "credentials",
    "error_messages",
    "hellos",
    "key_rotations",
    "mobile_credentials",
    "receipts",
    "sealed_bundles",
    "signed_auths",
    "signed_key_rotations",
    "signed_mobile_credentials",
    "signer_of",
    "time_syncs",
    "unlock_results",
    "verifier_of",
    "windows",
]

U8_MAX, U16_MAX, U32_MAX = 0xFF, 0xFFFF, 0xFFFF_FFFF

WORLD = World()
SIGNING_DOOR = WORLD.door("strategies")
"""The lock whose identity key signs receipts and audit batches."""
PHONE_KEY = ed25519_private_from_seed(fixed_bytes("strategies phone"))
"""The phone key named by :func:`signed_mobile_credentials` and signing AUTH."""

# --- fields ------------------------------------------------------------------------------

u8 = st.integers(0, U8_MAX)
u32 = st.integers(0, U32_MAX)
door_ids = st.binary(min_size=16, max_size=16)
ids16 = door_ids
keys32 = st.binary(min_size=32, max_size=32)
digests = keys32
signatures = st.binary(min_size=64, max_size=64)
challenges = st.binary(min_size=16, max_size=16)
credential_ids = st.binary(min_size=1, max_size=16)


@st.composite
def _ordered_pair(draw: st.DrawFn, low: int = 0, high: int = U32_MAX) -> tuple[int, int]:
    """Two integers ``a < b`` in ``[low, high]``."""
    a = draw(st.integers(low, high - 1))
    return a, draw(st.integers(a + 1, high))


# --- credential lists and changes ----------------------------------------------------------


@st.composite
def windows(draw: st.DrawFn) -> Window:
    start, end = draw(_ordered_pair(0, 1440))
    return Window(days=draw(st.integers(1, 0x7F)), start_minute=start, end_minute=end)


@st.composite
def credentials(draw: st.DrawFn, max_windows: int = MAX_SCHEDULE_WINDOWS) -> Credential:
    kind = draw(st.sampled_from(CredentialKind))
    valid_from, valid_until = draw(_ordered_pair())
    card_key = draw(st.binary(min_size=16, max_size=16)) if kind is CredentialKind.KEYCARD else b""
    return Credential(
        kind=kind,
        credential_id=draw(credential_ids),
        status=draw(st.sampled_from(CredentialStatus)),
        valid_from=valid_from,
        valid_until=valid_until,
        schedule=tuple(draw(st.lists(windows(), max_size=max_windows))),
        card_key=card_key,
    )


def credential_lists(max_entries: int = 10) -> st.SearchStrategy[CredentialList]:
    entries = st.lists(credentials(max_windows=3), max_size=max_entries, unique_by=lambda c: c.key)
    return st.builds(
        lambda door_id, version, items: CredentialList.build(
            door_id=door_id, version=version, entries=items
        ),
        door_ids,
        u32,
        entries,
    )


def _removes() -> st.SearchStrategy[Remove]:
    return st.builds(Remove, st.sampled_from(CredentialKind), credential_ids)


def changes() -> st.SearchStrategy[Change]:
    return st.one_of(st.builds(Upsert, credentials(max_windows=3)), _removes())


def change_lists(max_size: int = 10) -> st.SearchStrategy[list[Change]]:
    """Change lists with each credential key at most once (any order)."""
    return st.lists(changes(), max_size=max_size, unique_by=lambda c: c.key)


# --- session messages ------------------------------------------------------------------------


@st.composite
def hellos(draw: st.DrawFn) -> Hello:
    return Hello(
        door_id=draw(door_ids),
        list_version=draw(u32),
        list_age_s=draw(u32),
        battery_pct=draw(st.integers(0, 100)),
        audit_head_seq=draw(u32),
        key_epoch=draw(u32),
        lock_time=draw(u32),
        challenge=draw(challenges),
        supported_versions=tuple(draw(st.lists(u8, min_size=1, max_size=8))),
    )


@st.composite
def _scopes(draw: st.DrawFn) -> tuple[ScopeKind, tuple[bytes, ...]]:
    kind = draw(st.sampled_from(ScopeKind))
    if kind is ScopeKind.PROPERTY:
        return kind, (draw(door_ids),)
    limit = DEFAULT_LIMITS.max_scope_doors
    return kind, tuple(draw(st.lists(door_ids, min_size=1, max_size=limit, unique=True)))


@st.composite
def mobile_credentials(
    draw: st.DrawFn, phone_public_key: st.SearchStrategy[bytes] = keys32
) -> MobileCredential:
    valid_from, valid_until = draw(_ordered_pair())
    scope_kind, scope_ids = draw(_scopes())
    return MobileCredential(
        key_epoch=draw(u32),
        credential_id=draw(ids16),
        person_id=draw(ids16),
        phone_public_key=draw(phone_public_key),
        valid_from=valid_from,
        valid_until=valid_until,
        scope_kind=scope_kind,
        scope_ids=scope_ids,
        signature=draw(signatures),
    )


def auths() -> st.SearchStrategy[Auth]:
    return st.builds(
        Auth, intent=st.sampled_from(Intent), credential=mobile_credentials(), signature=signatures
    )


@st.composite
def unlock_results(draw: st.DrawFn) -> UnlockResult:
    reason = draw(st.sampled_from(Reason))
    open_seconds = draw(st.integers(1, U8_MAX)) if reason is Reason.GRANTED else 0
    return UnlockResult(
        door_id=draw(door_ids), reason=reason, open_seconds=open_seconds, audit_seq=draw(u32)
    )


def error_messages() -> st.SearchStrategy[ErrorMessage]:
    # 50 characters are at most 200 UTF-8 bytes: within Limits.max_error_detail.
    assert DEFAULT_LIMITS.max_error_detail >= 50 * 4
    return st.builds(
        ErrorMessage,
        code=st.sampled_from(ErrorCode),
        about_type=u8,
        detail=st.text(max_size=50),
    )


# --- signed messages -----------------------------------------------------------------------


@st.composite
def sealed_bundles(draw: st.DrawFn) -> SealedBundle:
    base, target = draw(_ordered_pair())
    return SealedBundle(
        door_id=draw(door_ids),
        key_epoch=draw(u32),
        base_version=base,
        target_version=target,
        target_digest=draw(digests),
        ephemeral_public=draw(keys32),
        ciphertext=draw(st.binary(min_size=16, max_size=300)),
        signature=draw(signatures),
    )


def receipts() -> st.SearchStrategy[Receipt]:
    return st.builds(
        Receipt,
        door_id=door_ids,
        requested_version=u32,
        list_version=u32,
        list_digest=digests,
        status=st.sampled_from(ReceiptStatus),
        signature=signatures,
    )


def audit_events(seq: int) -> st.SearchStrategy[AuditEvent]:
    return st.builds(
        AuditEvent,
        seq=st.just(seq),
        time=u32,
        kind=st.sampled_from(AuditEventKind),
        reason=u8,
        credential_id=st.binary(max_size=16),
        detail=u32,
    )


@st.composite
def audit_batches(draw: st.DrawFn, max_events: int = 12) -> AuditBatch:
    count = draw(st.integers(1, max_events))
    first = draw(st.integers(0, U32_MAX - count + 1))
    events = tuple(draw(audit_events(first + i)) for i in range(count))
    return AuditBatch(door_id=draw(door_ids), events=events, signature=draw(signatures))


def audit_acks() -> st.SearchStrategy[AuditAck]:
    return st.builds(AuditAck, door_id=door_ids, key_epoch=u32, up_to_seq=u32, signature=signatures)


def time_syncs() -> st.SearchStrategy[TimeSync]:
    return st.builds(
        TimeSync,
        door_id=door_ids,
        key_epoch=u32,
        sequence=u32,
        cloud_time=u32,
        challenge=challenges,
        signature=signatures,
    )


def key_rotations() -> st.SearchStrategy[KeyRotation]:
    return st.builds(
        KeyRotation,
        new_epoch=st.integers(1, U32_MAX),
        new_public_key=keys32,
        possession_signature=signatures,
        signature=signatures,
    )


MESSAGES: dict[MessageType, st.SearchStrategy[Any]] = {
    MessageType.HELLO: hellos(),
    MessageType.AUTH: auths(),
    MessageType.UNLOCK_RESULT: unlock_results(),
    MessageType.BUNDLE: sealed_bundles(),
    MessageType.RECEIPT: receipts(),
    MessageType.AUDIT_BATCH: audit_batches(),
    MessageType.AUDIT_ACK: audit_acks(),
    MessageType.TIME_SYNC: time_syncs(),
    MessageType.KEY_ROTATION: key_rotations(),
    MessageType.ERROR: error_messages(),
}
"""A strategy of valid (arbitrarily signed) instances per registered message type."""


# --- properly signed -----------------------------------------------------------------------

_LOCK_SIGNED = (Receipt, AuditBatch)


def signer_of(cls: type[SignedMessage]) -> Ed25519PrivateKey:
    """The fixture key that signs ``cls``: the lock's identity key or the cloud key."""
    return SIGNING_DOOR.identity if cls in _LOCK_SIGNED else WORLD.cloud_key


def verifier_of(message: SignedMessage) -> Ed25519PublicKey:
    """The public key that verifies a message from :data:`SIGNED_MESSAGES`."""
    if isinstance(message, KeyRotation):
        return WORLD.cloud_key_at(message.new_epoch - 1).public_key()
    return signer_of(type(message)).public_key()


def _resigned(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy.map(lambda m: m.signed(signer_of(type(m))))


def signed_mobile_credentials() -> st.SearchStrategy[MobileCredential]:
    """Cloud-signed credentials naming :data:`PHONE_KEY`."""
    return _resigned(mobile_credentials(st.just(public_bytes(PHONE_KEY))))


@st.composite
def signed_auths(draw: st.DrawFn, door_id: bytes, challenge: bytes) -> Auth:
    """AUTH signed by :data:`PHONE_KEY` for this door and challenge."""
    return Auth.create(
        credential=draw(signed_mobile_credentials()),
        phone_key=PHONE_KEY,
        door_id=door_id,
        challenge=challenge,
        intent=draw(st.sampled_from(Intent)),
    )


@st.composite
def signed_key_rotations(draw: st.DrawFn, max_epoch: int = 16) -> KeyRotation:
    """A rotation to epoch ``n`` signed by the fixture cloud key of epoch ``n - 1``."""
    epoch = draw(st.integers(1, max_epoch))
    return KeyRotation.create(
        current_key=WORLD.cloud_key_at(epoch - 1),
        new_key=WORLD.cloud_key_at(epoch),
        new_epoch=epoch,
    )


SIGNED_MESSAGES: dict[type[Message], st.SearchStrategy[Any]] = {
    SealedBundle: _resigned(sealed_bundles()),
    Receipt: _resigned(receipts()),
    AuditBatch: _resigned(audit_batches()),
    AuditAck: _resigned(audit_acks()),
    TimeSync: _resigned(time_syncs()),
    KeyRotation: signed_key_rotations(),
    MobileCredential: signed_mobile_credentials(),
}
"""Strategies of messages signed by their real fixture signer (see :func:`signer_of`;
a key rotation is signed by the previous epoch's cloud key)."""
