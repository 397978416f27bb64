"""Delta bundles: the changes for one door, sealed to it and signed by the cloud
(``docs/protocol.md`` §6.2).

Theory of operation: a bundle moves a door's credential list from any version in
``[base_version, target_version)`` to ``target_version``. Its plaintext is the
final state of every credential changed after the base (an upsert of the whole
entry, or a removal). The plaintext is sealed to the door's X25519 key with the
bundle header as associated data; the header, ephemeral key and ciphertext are
then signed by the cloud. The relaying phone can read only the header (door id,
versions, target digest), and can change nothing.

:func:`seal_bundle` is the cloud side. On the lock side :func:`verify_bundle`
checks the signature over the exact received bytes before parsing, and
:func:`decrypt_changes` opens the box; :mod:`protocol.delta` orders these steps.

Codec: :data:`ChangesFormat` (construct) is the normative declaration of §6.2.1.
:func:`decode_changes` is a lock's hot path (a first full list carries thousands of
entries), so it first runs a precompiled :mod:`struct` reader that *accepts only*
input it proves valid (:func:`protocol.credential_list.read_entry` for each entry)
and otherwise hands the bytes to the construct path, which raises the typed error.
Valid input thus decodes to what the declaration gives, and every refusal, its
class, message and order, is the declaration's own;
``tests/test_bundle_codec_speed.py`` proves the two agree.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from construct import GreedyBytes, PrefixedArray, Struct, Switch, this
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ._codec import (
    DIGEST_SIZE,
    DOOR_ID_SIZE,
    KEY_SIZE,
    SIGNATURE_SIZE,
    U8,
    U32,
    Bytes8,
    Digest,
    DoorId,
    Key32,
    parse_exact,
)
from ._message import SignedMessage, register
from ._validate import check_bytes, check_uint, to_enum
from .codes import CredentialKind, MessageType
from .credential_list import (
    MAX_CREDENTIAL_ID,
    Credential,
    CredentialKey,
    EntryFormat,
    read_entry,
)
from .crypto import AEAD_TAG_SIZE, SignContext, open_sealed, seal
from .errors import MalformedMessageError, TooLargeError, UsageError
from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "Change",
    "Remove",
    "SealedBundle",
    "Upsert",
    "decode_changes",
    "decrypt_changes",
    "encode_changes",
    "encode_entry_changes",
    "open_changes",
    "seal_bundle",
    "seal_encoded_changes",
    "verify_bundle",
]

OP_UPSERT, OP_REMOVE = 1, 2
_UPSERT = bytes((OP_UPSERT,))
_MIN_CHANGE = 4  # §6.2.1: a REMOVE of a one-byte id (op, kind, n, id)
_KINDS: dict[int, CredentialKind] = {kind.value: kind for kind in CredentialKind}
_HEADER_SIZE = DOOR_ID_SIZE + 4 + 4 + 4 + DIGEST_SIZE
_AAD_CONTEXT = b"LK1 bundle-aad\x00"
_BUNDLE_HEAD = struct.Struct(f">{DOOR_ID_SIZE}sIII{DIGEST_SIZE}s{KEY_SIZE}s")
_AAD_HEAD = struct.Struct(f">{DOOR_ID_SIZE}sIII{DIGEST_SIZE}s")
assert _AAD_HEAD.size == _HEADER_SIZE

ChangeFormat = Struct(
    "op" / U8,
    "body"
    / Switch(
        this.op,
        {OP_UPSERT: EntryFormat, OP_REMOVE: Struct("kind" / U8, "credential_id" / Bytes8)},
    ),
)
ChangesFormat = Struct("changes" / PrefixedArray(U32, ChangeFormat)).compile()


@dataclass(frozen=True, slots=True)
class Upsert:
    """Set an entry to this final state (add or replace)."""

    credential: Credential

    @property
    def key(self) -> CredentialKey:
        return self.credential.key


@dataclass(frozen=True, slots=True)
class Remove:
    """Delete the entry with this key, if present."""

    kind: CredentialKind
    credential_id: bytes

    @property
    def key(self) -> CredentialKey:
        return (int(self.kind), self.credential_id)


Change = Upsert | Remove


def encode_changes(changes: Sequence[Change]) -> bytes:
    """Canonical plaintext: changes sorted by key, each key at most once (§6.2.1)."""
    ordered = sorted(changes, key=lambda c: c.key)
    if any(a.key == b.key for a, b in itertools.pairwise(ordered)):
        raise UsageError("a delta may change each credential at most once")
    return b"".join([len(ordered).to_bytes(4, "big"), *map(_encode_change, ordered)])


def encode_entry_changes(upserts: Iterable[bytes], removals: Iterable[bytes]) -> bytes:
    """:func:`encode_changes` of changes held as encodings this package made (trusted, as
    a cloud's stored entries): ``upserts`` are canonical entry encodings (§5.1),
    ``removals`` keys as :func:`~protocol.credential_list.key_bytes`. Nothing is decoded:
    the key order of :func:`~protocol.credential_list.key_bytes` is the key order."""
    pieces = [(blob[:1] + blob[2 : 2 + blob[1]], _UPSERT + blob) for blob in upserts]
    pieces += [(key, bytes((OP_REMOVE, key[0], len(key) - 1)) + key[1:]) for key in removals]
    pieces.sort()
    if any(a[0] == b[0] for a, b in itertools.pairwise(pieces)):
        raise UsageError("a delta may change each credential at most once")
    return b"".join([len(pieces).to_bytes(4, "big"), *[piece for _, piece in pieces]])


def _encode_change(change: Change) -> bytes:
    """One change as :data:`ChangesFormat` lays it out (a property test checks they agree)."""
    if isinstance(change, Upsert):
        return bytes((OP_UPSERT,)) + change.credential.encoded
    return bytes((OP_REMOVE, change.kind, len(change.credential_id))) + change.credential_id


def decode_changes(plaintext: bytes, *, limits: Limits = DEFAULT_LIMITS) -> tuple[Change, ...]:
    """Parse a canonical change list; unsorted or repeated keys are malformed (§6.2.1)."""
    changes = _valid_changes(plaintext, limits.max_list_entries)
    return _declared_changes(plaintext, limits) if changes is None else changes


def _valid_changes(data: bytes, max_changes: int) -> tuple[Change, ...] | None:
    """The changes ``data`` encodes if it is provably valid, else ``None`` (never raises).

    Allocates nothing beyond the input's size: the count is checked against
    ``max_changes`` and against the bytes present before any change is read.
    """
    if type(data) is not bytes or len(data) < 4:
        return None
    count, at, limit = int.from_bytes(data[:4], "big"), 4, len(data)
    if count > max_changes or count * _MIN_CHANGE > limit - at:
        return None
    changes: list[Change] = []
    previous = b""  # below every key
    for _ in range(count):
        reader = _READERS.get(data[at]) if at < limit else None
        read = None if reader is None else reader(data, at + 1)
        if read is None:
            return None
        change, key, at = read
        if key <= previous:  # key_bytes order is key order (§5.2)
            return None
        changes.append(change)
        previous = key
    return tuple(changes) if at == limit else None


def _read_upsert(data: bytes, at: int) -> tuple[Upsert, bytes, int] | None:
    """The UPSERT body at ``data[at]``, its key as ``key_bytes`` and its end; None if invalid."""
    read = read_entry(data, at)
    if read is None:
        return None
    credential, end = read
    return Upsert(credential), data[at : at + 1] + credential.credential_id, end


def _read_remove(data: bytes, at: int) -> tuple[Remove, bytes, int] | None:
    """The REMOVE body at ``data[at]``, its key as ``key_bytes`` and its end; None if invalid
    (what :func:`_change_from` refuses: an unknown kind, an id of 0 or over 16 bytes)."""
    if at + 2 > len(data):
        return None
    kind, size = data[at], data[at + 1]
    end = at + 2 + size
    if kind not in _KINDS or not 0 < size <= MAX_CREDENTIAL_ID or end > len(data):
        return None
    return Remove(_KINDS[kind], data[at + 2 : end]), data[at : at + 1] + data[at + 2 : end], end


_READERS = {OP_UPSERT: _read_upsert, OP_REMOVE: _read_remove}


def _declared_changes(plaintext: bytes, limits: Limits) -> tuple[Change, ...]:
    """:func:`decode_changes` through the construct declaration (the reference path)."""
    if len(plaintext) >= 4 and int.from_bytes(plaintext[:4], "big") > limits.max_list_entries:
        raise TooLargeError(f"delta carries over {limits.max_list_entries} changes")
    parsed = parse_exact(ChangesFormat, plaintext, "delta")
    try:
        changes = tuple(_change_from(c) for c in parsed.changes)
    except UsageError as exc:
        raise MalformedMessageError(f"delta: {exc}") from None
    keys = [c.key for c in changes]
    if any(a >= b for a, b in itertools.pairwise(keys)):
        raise MalformedMessageError("delta changes are not in strict key order")
    return changes


def _change_from(c: Any) -> Change:
    if c.op == OP_UPSERT:
        return Upsert(Credential.from_container(c.body))
    if c.op == OP_REMOVE:
        check_bytes("credential_id", c.body.credential_id, max_size=16)
        if not c.body.credential_id:
            raise UsageError("a removal names a credential_id")
        return Remove(to_enum(CredentialKind, "kind", c.body.kind), c.body.credential_id)
    raise UsageError(f"unknown change op {c.op}")


@register
@dataclass(frozen=True, kw_only=True)
class SealedBundle(SignedMessage):
    """BUNDLE: header, sealed changes, cloud signature (§6.2)."""

    TYPE: ClassVar[MessageType] = MessageType.BUNDLE
    CONTEXT: ClassVar[SignContext] = SignContext.BUNDLE
    _FORMAT: ClassVar[Any] = Struct(
        "door_id" / DoorId,
        "key_epoch" / U32,
        "base_version" / U32,
        "target_version" / U32,
        "target_digest" / Digest,
        "ephemeral_public" / Key32,
        "ciphertext" / GreedyBytes,
    ).compile()

    door_id: bytes
    key_epoch: int
    base_version: int
    target_version: int
    target_digest: bytes
    ephemeral_public: bytes
    ciphertext: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_bytes("door_id", self.door_id, size=DOOR_ID_SIZE)
        for name in ("key_epoch", "base_version", "target_version"):
            check_uint(name, getattr(self, name), 32)
        if self.target_version <= self.base_version:
            raise UsageError("target_version must be above base_version")
        check_bytes("target_digest", self.target_digest, size=DIGEST_SIZE)
        check_bytes("ephemeral_public", self.ephemeral_public, size=KEY_SIZE)
        if len(self.ciphertext) < AEAD_TAG_SIZE:
            raise UsageError("ciphertext is shorter than its AEAD tag")
        if self.signature:
            check_bytes("signature", self.signature, size=SIGNATURE_SIZE)

    def body_bytes(self) -> bytes:
        """The signed body, packed with ``struct`` (a property test checks it against
        ``_FORMAT``, the normative declaration): it is built three times per seal."""
        head = _BUNDLE_HEAD.pack(
            self.door_id,
            self.key_epoch,
            self.base_version,
            self.target_version,
            self.target_digest,
            self.ephemeral_public,
        )
        return head + self.ciphertext

    def associated_data(self) -> bytes:
        """What the AEAD authenticates: context, door id, epoch, versions, digest."""
        return _AAD_CONTEXT + _AAD_HEAD.pack(
            self.door_id, self.key_epoch, self.base_version, self.target_version, self.target_digest
        )

    def covers(self, version: int) -> bool:
        """True when the bundle applies to a list at ``version``."""
        return self.base_version <= version < self.target_version


def seal_bundle(
    changes: Sequence[Change],
    *,
    door_id: bytes,
    door_public: X25519PublicKey,
    base_version: int,
    target_version: int,
    target_digest: bytes,
    key_epoch: int,
    cloud_key: Ed25519PrivateKey,
    ephemeral: X25519PrivateKey,
) -> SealedBundle:
    """Cloud side: seal ``changes`` to one door and sign the result."""
    return _seal(
        lambda: encode_changes(changes),
        door_id=door_id,
        door_public=door_public,
        base_version=base_version,
        target_version=target_version,
        target_digest=target_digest,
        key_epoch=key_epoch,
        cloud_key=cloud_key,
        ephemeral=ephemeral,
    )


def seal_encoded_changes(
    plaintext: bytes,
    *,
    door_id: bytes,
    door_public: X25519PublicKey,
    base_version: int,
    target_version: int,
    target_digest: bytes,
    key_epoch: int,
    cloud_key: Ed25519PrivateKey,
    ephemeral: X25519PrivateKey,
) -> SealedBundle:
    """:func:`seal_bundle` of changes already canonically encoded (by
    :func:`encode_changes` or :func:`encode_entry_changes`)."""
    return _seal(
        lambda: plaintext,
        door_id=door_id,
        door_public=door_public,
        base_version=base_version,
        target_version=target_version,
        target_digest=target_digest,
        key_epoch=key_epoch,
        cloud_key=cloud_key,
        ephemeral=ephemeral,
    )


def _seal(
    plaintext: Callable[[], bytes],
    *,
    door_id: bytes,
    door_public: X25519PublicKey,
    base_version: int,
    target_version: int,
    target_digest: bytes,
    key_epoch: int,
    cloud_key: Ed25519PrivateKey,
    ephemeral: X25519PrivateKey,
) -> SealedBundle:
    """Check the header's fields, then encode (``plaintext()``), seal and sign."""

    def bundle(ephemeral_public: bytes, ciphertext: bytes) -> SealedBundle:
        # its checks (sizes, versions in order) run before anything is signed
        return SealedBundle(
            door_id=door_id,
            key_epoch=key_epoch,
            base_version=base_version,
            target_version=target_version,
            target_digest=target_digest,
            ephemeral_public=ephemeral_public,
            ciphertext=ciphertext,
        )

    try:
        head = _AAD_HEAD.pack(door_id, key_epoch, base_version, target_version, target_digest)
    except struct.error:  # a field of the wrong type or range: say which
        bundle(bytes(KEY_SIZE), bytes(AEAD_TAG_SIZE))
        raise
    eph_public, ciphertext = seal(door_public, plaintext(), _AAD_CONTEXT + head, ephemeral)
    return bundle(eph_public, ciphertext).signed(cloud_key)


def verify_bundle(
    payload: bytes, *, cloud_public: Ed25519PublicKey, limits: Limits = DEFAULT_LIMITS
) -> SealedBundle:
    """Lock side, step 1: check the cloud signature over the exact bytes, then parse."""
    if len(payload) > limits.max_frame_payload:
        raise TooLargeError("bundle exceeds the frame payload limit")
    return SealedBundle.verified_from_bytes(payload, cloud_public, limits=limits)


def decrypt_changes(
    bundle: SealedBundle, *, door_private: X25519PrivateKey, limits: Limits = DEFAULT_LIMITS
) -> tuple[Change, ...]:
    """Lock side, step 2: open the sealed changes (AuthenticationError if not ours)."""
    return decode_changes(open_changes(bundle, door_private=door_private), limits=limits)


def open_changes(bundle: SealedBundle, *, door_private: X25519PrivateKey) -> bytes:
    """The canonical plaintext of the sealed changes (AuthenticationError if not ours)."""
    return open_sealed(
        door_private, bundle.ephemeral_public, bundle.ciphertext, bundle.associated_data()
    )
