"""Round trips of every message, list and change list: parse, build and size.

Theory of operation: for each type in :data:`protocol.REGISTRY` (parametrized over
the registry, so a new message type without a strategy or a size rule fails here),
``from_bytes(to_bytes(m)) == m``, the frame round trip gives ``m`` back, and the
encoded size equals the size computed here from the field widths of
``docs/protocol.md`` — independently of the codec. The frame itself is checked
against frames built by hand with ``int.to_bytes`` and ``zlib.crc32``, one table
row per decoding error, each asserting the exact exception class.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    REGISTRY,
    AuditBatch,
    Auth,
    Credential,
    CredentialKind,
    CredentialList,
    ErrorMessage,
    Frame,
    Hello,
    Limits,
    Message,
    MessageType,
    MobileCredential,
    SealedBundle,
    SignedMessage,
    UsageError,
    decode_message,
)
from protocol.bundle import Change, Upsert, decode_changes, encode_changes
from protocol.errors import (
    AuthenticationError,
    BadChecksumError,
    BadLengthError,
    BadMagicError,
    DecodeError,
    TooLargeError,
    TrailingBytesError,
    TruncatedError,
    UnknownMessageTypeError,
    UnsupportedVersionError,
)
from tests.strategies import (
    MESSAGES,
    PHONE_KEY,
    SIGNED_MESSAGES,
    change_lists,
    credential_lists,
    credentials,
    mobile_credentials,
    signed_auths,
    verifier_of,
)

EXAMPLES = settings(max_examples=200, deadline=None)
CRYPTO_EXAMPLES = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
REGISTERED = sorted(REGISTRY)

# --- sizes from the field widths (docs/protocol.md §3-§6), not from the codec ---------------

DOOR_ID, U8, U16, U32, KEY, DIGEST, SIG, CHALLENGE = 16, 1, 2, 4, 32, 32, 64, 16
FRAME_HEADER, FRAME_CRC = 2 + U8 + U8 + U32, 4


def mobile_credential_size(m: MobileCredential) -> int:
    ids = U32 + 16 + 16 + KEY + U32 + U32 + U8
    return ids + U8 + DOOR_ID * len(m.scope_ids) + SIG


def hello_size(m: Hello) -> int:
    return DOOR_ID + 5 * U32 + U8 + CHALLENGE + U8 + U8 * len(m.supported_versions)


def auth_size(m: Auth) -> int:
    return U8 + U16 + mobile_credential_size(m.credential) + SIG


def bundle_size(m: SealedBundle) -> int:
    return DOOR_ID + 3 * U32 + DIGEST + KEY + len(m.ciphertext) + SIG


def audit_batch_size(m: AuditBatch) -> int:
    events = sum(U32 + U32 + U8 + U8 + U8 + len(e.credential_id) + U32 for e in m.events)
    return DOOR_ID + U16 + events + SIG


def error_size(m: ErrorMessage) -> int:
    return U16 + U8 + U8 + len(m.detail.encode("utf-8"))


PAYLOAD_SIZE: dict[MessageType, Callable[[Any], int]] = {
    MessageType.HELLO: hello_size,
    MessageType.AUTH: auth_size,
    MessageType.UNLOCK_RESULT: lambda m: DOOR_ID + U8 + U8 + U32,
    MessageType.BUNDLE: bundle_size,
    MessageType.RECEIPT: lambda m: DOOR_ID + U32 + U32 + DIGEST + U8 + SIG,
    MessageType.AUDIT_BATCH: audit_batch_size,
    MessageType.AUDIT_ACK: lambda m: DOOR_ID + U32 + U32 + SIG,
    MessageType.TIME_SYNC: lambda m: DOOR_ID + 3 * U32 + CHALLENGE + SIG,
    MessageType.KEY_ROTATION: lambda m: U32 + KEY + SIG + SIG,
    MessageType.ERROR: error_size,
}


def entry_size(c: Credential) -> int:
    card_key = 16 if c.kind is CredentialKind.KEYCARD else 0
    windows = U8 + (U8 + U16 + U16) * len(c.schedule)
    return U8 + U8 + len(c.credential_id) + U8 + U32 + U32 + windows + card_key


def change_size(change: Change) -> int:
    if isinstance(change, Upsert):
        return U8 + entry_size(change.credential)
    return U8 + U8 + U8 + len(change.credential_id)


# --- every registered message ----------------------------------------------------------------


@pytest.mark.parametrize("message_type", REGISTERED, ids=lambda t: t.name)
@EXAMPLES
@given(data=st.data())
def test_payload_round_trip(message_type: MessageType, data: st.DataObject) -> None:
    message = data.draw(MESSAGES[message_type])
    cls = REGISTRY[message_type]
    assert type(message) is cls
    assert cls.from_bytes(message.to_bytes()) == message


@pytest.mark.parametrize("message_type", REGISTERED, ids=lambda t: t.name)
@EXAMPLES
@given(data=st.data())
def test_frame_round_trip(message_type: MessageType, data: st.DataObject) -> None:
    message = data.draw(MESSAGES[message_type])
    frame = message.to_frame()
    assert decode_message(frame) == message
    assert Frame.from_bytes(frame) == Frame(type=message_type, payload=message.to_bytes())


@pytest.mark.parametrize("message_type", REGISTERED, ids=lambda t: t.name)
@EXAMPLES
@given(data=st.data())
def test_encoded_size(message_type: MessageType, data: st.DataObject) -> None:
    message = data.draw(MESSAGES[message_type])
    expected = PAYLOAD_SIZE[message_type](message)
    assert len(message.to_bytes()) == expected
    assert len(message.to_frame()) == FRAME_HEADER + expected + FRAME_CRC


@EXAMPLES
@given(mobile_credentials())
def test_mobile_credential_round_trip_and_size(credential: MobileCredential) -> None:
    payload = credential.to_bytes()
    assert MobileCredential.from_bytes(payload) == credential
    assert len(payload) == mobile_credential_size(credential)


# --- properly signed messages ------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(SIGNED_MESSAGES), ids=lambda c: c.__name__)
@CRYPTO_EXAMPLES
@given(data=st.data())
def test_signed_message_verifies_after_round_trip(
    cls: type[SignedMessage], data: st.DataObject
) -> None:
    message = data.draw(SIGNED_MESSAGES[cls])
    assert cls.verified_from_bytes(message.to_bytes(), verifier_of(message)) == message


@pytest.mark.parametrize("cls", list(SIGNED_MESSAGES), ids=lambda c: c.__name__)
@CRYPTO_EXAMPLES
@given(data=st.data())
def test_signed_message_with_flipped_signature_bit_is_rejected(
    cls: type[SignedMessage], data: st.DataObject
) -> None:
    message = data.draw(SIGNED_MESSAGES[cls])
    payload = bytearray(message.to_bytes())
    payload[-1 - data.draw(st.integers(0, SIG - 1))] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(AuthenticationError):
        cls.verified_from_bytes(bytes(payload), verifier_of(message))


@CRYPTO_EXAMPLES
@given(
    door_id=st.binary(min_size=16, max_size=16),
    challenge=st.binary(min_size=16, max_size=16),
    data=st.data(),
)
def test_signed_auth_verifies_after_frame_round_trip(
    door_id: bytes, challenge: bytes, data: st.DataObject
) -> None:
    auth = data.draw(signed_auths(door_id, challenge))
    decoded = decode_message(auth.to_frame())
    assert isinstance(decoded, Auth)
    key = decoded.verify(door_id=door_id, challenge=challenge)
    assert key.public_bytes_raw() == PHONE_KEY.public_key().public_bytes_raw()


# --- credential lists --------------------------------------------------------------------------


@EXAMPLES
@given(credential_lists())
def test_credential_list_round_trip_and_size(held: CredentialList) -> None:
    encoded = held.to_bytes()
    decoded = CredentialList.from_bytes(encoded)
    assert decoded == held
    assert decoded.digest == held.digest
    assert len(encoded) == DOOR_ID + U32 + U32 + sum(entry_size(c) for c in held.values())


@EXAMPLES
@given(credential_lists(), st.randoms(use_true_random=False))
def test_credential_list_digest_ignores_insertion_order(held: CredentialList, rnd: Any) -> None:
    entries = list(held.values())
    rnd.shuffle(entries)
    again = CredentialList.build(door_id=held.door_id, version=held.version, entries=entries)
    assert again.to_bytes() == held.to_bytes()
    assert again.digest == held.digest


@EXAMPLES
@given(credential_lists())
def test_credential_list_digest_is_sha256_of_context_and_encoding(held: CredentialList) -> None:
    assert held.digest == hashlib.sha256(b"LK1 list\x00" + held.to_bytes()).digest()


@EXAMPLES
@given(credential_lists())
def test_credential_list_digest_covers_the_version(held: CredentialList) -> None:
    bumped = held.with_changes(version=(held.version + 1) % 2**32, upserts=(), removals=())
    assert bumped.digest != held.digest


@EXAMPLES
@given(credential_lists(), change_lists())
def test_incremental_changes_match_a_list_built_from_scratch(
    held: CredentialList, changes: list[Change]
) -> None:
    upserts = [c.credential for c in changes if isinstance(c, Upsert)]
    removals = [c.key for c in changes if not isinstance(c, Upsert)]
    changed = held.with_changes(version=held.version, upserts=upserts, removals=removals)
    table = {k: v for k, v in held.items() if k not in removals} | {c.key: c for c in upserts}
    scratch = CredentialList.build(
        door_id=held.door_id, version=held.version, entries=table.values()
    )
    assert changed == scratch
    assert changed.digest == scratch.digest


# --- change lists ------------------------------------------------------------------------------


@EXAMPLES
@given(change_lists())
def test_changes_round_trip_in_key_order_with_size(changes: list[Change]) -> None:
    encoded = encode_changes(changes)
    assert decode_changes(encoded) == tuple(sorted(changes, key=lambda c: c.key))
    assert len(encoded) == U32 + sum(change_size(c) for c in changes)


@EXAMPLES
@given(change_lists(), st.randoms(use_true_random=False))
def test_changes_encoding_ignores_input_order(changes: list[Change], rnd: Any) -> None:
    shuffled = list(changes)
    rnd.shuffle(shuffled)
    assert encode_changes(shuffled) == encode_changes(changes)


@EXAMPLES
@given(credentials())
def test_changes_with_a_repeated_key_are_refused(credential: Credential) -> None:
    with pytest.raises(UsageError):
        encode_changes([Upsert(credential), Upsert(credential)])


# --- the frame, byte by byte ------------------------------------------------------------------


def hand_frame(
    message_type: int,
    payload: bytes,
    *,
    magic: bytes = b"LK",
    version: int = 1,
    length: int | None = None,
    crc_xor: int = 0,
    trailing: bytes = b"",
) -> bytes:
    """A frame built by hand: magic, version, type, u32 length, payload, CRC-32."""
    size = len(payload) if length is None else length
    body = magic + bytes([version, message_type]) + size.to_bytes(4, "big") + payload
    crc = zlib.crc32(body) ^ crc_xor
    return body + crc.to_bytes(4, "big") + trailing


SMALL = Limits(max_frame_payload=8)
HELLO = int(MessageType.HELLO)

FRAME_ERRORS: list[tuple[str, bytes, Limits, type[DecodeError]]] = [
    ("empty", b"", Limits(), TruncatedError),
    ("one_byte_short", hand_frame(HELLO, b"")[:-1], Limits(), TruncatedError),
    ("bad_magic", hand_frame(HELLO, b"abc", magic=b"KL"), Limits(), BadMagicError),
    ("version_2", hand_frame(HELLO, b"abc", version=2), Limits(), UnsupportedVersionError),
    ("version_0", hand_frame(HELLO, b"abc", version=0), Limits(), UnsupportedVersionError),
    ("length_says_more", hand_frame(HELLO, b"abc", length=4), Limits(), BadLengthError),
    ("length_says_far_more", hand_frame(HELLO, b"abc", length=1000), Limits(), BadLengthError),
    ("trailing_byte", hand_frame(HELLO, b"abc", trailing=b"\x00"), Limits(), TrailingBytesError),
    ("length_says_less", hand_frame(HELLO, b"abc", length=2), Limits(), TrailingBytesError),
    ("bad_checksum", hand_frame(HELLO, b"abc", crc_xor=1), Limits(), BadChecksumError),
    ("unknown_type_0x7f", hand_frame(0x7F, b"abc"), Limits(), UnknownMessageTypeError),
    ("unknown_type_0x00", hand_frame(0x00, b""), Limits(), UnknownMessageTypeError),
    ("over_limit", hand_frame(HELLO, bytes(9)), SMALL, TooLargeError),
    ("over_limit_before_length", hand_frame(HELLO, b"", length=9), SMALL, TooLargeError),
    (
        "magic_before_version",
        hand_frame(HELLO, b"", magic=b"XX", version=9),
        Limits(),
        BadMagicError,
    ),
    ("checksum_before_type", hand_frame(0x7F, b"", crc_xor=1), Limits(), BadChecksumError),
]


@pytest.mark.parametrize(
    ("data", "limits", "error"), [c[1:] for c in FRAME_ERRORS], ids=[c[0] for c in FRAME_ERRORS]
)
@pytest.mark.parametrize(
    "decode", [Frame.from_bytes, decode_message], ids=["Frame.from_bytes", "decode_message"]
)
def test_bad_frame_raises_exact_error(
    decode: Callable[..., object], data: bytes, limits: Limits, error: type[DecodeError]
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(data, limits=limits)
    assert type(info.value) is error


def test_error_fields_describe_the_fault() -> None:
    with pytest.raises(UnsupportedVersionError) as version:
        Frame.from_bytes(hand_frame(HELLO, b"", version=2))
    with pytest.raises(UnknownMessageTypeError) as unknown:
        Frame.from_bytes(hand_frame(0x7F, b""))
    with pytest.raises(TrailingBytesError) as trailing:
        Frame.from_bytes(hand_frame(HELLO, b"", trailing=b"xyz"))
    body = hand_frame(HELLO, b"ab")[:-4]
    with pytest.raises(BadChecksumError) as checksum:
        Frame.from_bytes(body + (zlib.crc32(body) ^ 0xFF).to_bytes(4, "big"))
    assert (version.value.version, version.value.supported) == (2, (1,))
    assert unknown.value.message_type == 0x7F
    assert trailing.value.count == 3
    assert checksum.value.expected == zlib.crc32(body) ^ 0xFF
    assert checksum.value.actual == zlib.crc32(body)


@pytest.mark.parametrize("message_type", list(MessageType), ids=lambda t: t.name)
@pytest.mark.parametrize("payload", [b"", b"\x00", bytes(range(256))], ids=["empty", "one", "256"])
def test_hand_built_frame_decodes_and_encodes_identically(
    message_type: MessageType, payload: bytes
) -> None:
    data = hand_frame(int(message_type), payload)
    assert Frame.from_bytes(data) == Frame(type=message_type, payload=payload)
    assert Frame(type=message_type, payload=payload).to_bytes() == data


def test_frame_at_exactly_the_payload_limit_is_accepted() -> None:
    frame = Frame.from_bytes(hand_frame(HELLO, bytes(8)), limits=SMALL)
    assert frame.payload == bytes(8)


def test_every_message_type_is_registered() -> None:
    assert set(REGISTRY) == set(MessageType)
    assert all(issubclass(cls, Message) and cls.TYPE is t for t, cls in REGISTRY.items())


@given(
    version=st.integers(0, 255), message_type=st.integers(0, 255), length=st.integers(0, 2**32 - 1)
)
def test_the_hot_path_header_packs_the_bytes_the_construct_declaration_builds(
    version: int, message_type: int, length: int
) -> None:
    from protocol.frame import HEADER_STRUCT, MAGIC, FrameHeader

    declared = FrameHeader.build({"version": version, "type": message_type, "length": length})
    assert HEADER_STRUCT.pack(MAGIC, version, message_type, length) == bytes(declared)
