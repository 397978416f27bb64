"""Keycard challenge-response: a card cloned by copying its UID must be rejected."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import assume, given
from hypothesis import strategies as st

from protocol.errors import UsageError
from protocol.keycard import (
    CARD_CHALLENGE_SIZE,
    CARD_KEY_SIZE,
    CARD_RESPONSE_SIZE,
    Keycard,
    card_response,
    derive_card_key,
    verify_card_response,
)

KEY = bytes(range(16))
OTHER_KEY = bytes(range(100, 116))
UID = bytes.fromhex("04a1b2c3d4e5f6")
OTHER_UID = bytes.fromhex("04a1b2c3d4e5f7")
CHALLENGE = bytes.fromhex("00112233445566778899aabbccddeeff")
LATER_CHALLENGE = bytes.fromhex("ffeeddccbbaa99887766554433221100")

keys = st.binary(min_size=CARD_KEY_SIZE, max_size=CARD_KEY_SIZE)
uids = st.sampled_from([4, 7, 10]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
challenges = st.binary(min_size=CARD_CHALLENGE_SIZE, max_size=CARD_CHALLENGE_SIZE)


@dataclass(frozen=True)
class ClonedCard:
    """A cloner's card: the victim's UID copied, the key unknown; answers with a fixed value."""

    uid: bytes
    answer: bytes

    def respond(self, challenge: bytes) -> bytes:
        return self.answer


def lock_accepts(card: Keycard | ClonedCard, challenge: bytes, *, enrolled_key: bytes) -> bool:
    """What the lock does at a tap: read the UID, challenge the card, verify the answer."""
    return verify_card_response(enrolled_key, card.uid, challenge, card.respond(challenge))


# --- the genuine card ------------------------------------------------------------------


def test_genuine_card_with_right_key_is_accepted() -> None:
    card = Keycard(uid=UID, key=KEY)
    assert lock_accepts(card, CHALLENGE, enrolled_key=KEY)


def test_card_with_wrong_key_is_rejected() -> None:
    card = Keycard(uid=UID, key=OTHER_KEY)
    assert not lock_accepts(card, CHALLENGE, enrolled_key=KEY)


def test_response_is_cmac_over_labelled_uid_and_challenge() -> None:
    mac = CMAC(algorithms.AES(KEY))
    mac.update(b"LK1-CARD" + bytes([7]) + UID + CHALLENGE)
    expected = mac.finalize()
    assert card_response(KEY, UID, CHALLENGE) == expected
    assert Keycard(uid=UID, key=KEY).respond(CHALLENGE) == expected
    assert len(expected) == CARD_RESPONSE_SIZE


# --- attacks: cloned UID ---------------------------------------------------------------


def test_clone_copying_uid_with_zero_response_is_rejected() -> None:
    clone = ClonedCard(uid=UID, answer=bytes(CARD_RESPONSE_SIZE))
    assert not lock_accepts(clone, CHALLENGE, enrolled_key=KEY)


def test_clone_copying_uid_with_random_response_is_rejected() -> None:
    clone = ClonedCard(uid=UID, answer=hashlib.sha256(b"guess").digest()[:16])
    assert not lock_accepts(clone, CHALLENGE, enrolled_key=KEY)


def test_clone_replaying_response_to_earlier_challenge_is_rejected() -> None:
    recorded = Keycard(uid=UID, key=KEY).respond(CHALLENGE)
    clone = ClonedCard(uid=UID, answer=recorded)
    assert lock_accepts(clone, CHALLENGE, enrolled_key=KEY)  # same challenge: the recording
    assert not lock_accepts(clone, LATER_CHALLENGE, enrolled_key=KEY)


def test_clone_with_uid_only_and_empty_answer_is_rejected() -> None:
    clone = ClonedCard(uid=UID, answer=b"")
    assert not lock_accepts(clone, CHALLENGE, enrolled_key=KEY)


def test_response_for_another_uid_is_rejected() -> None:
    response = card_response(KEY, OTHER_UID, CHALLENGE)
    assert not verify_card_response(KEY, UID, CHALLENGE, response)


def test_uid_length_is_bound_into_the_response() -> None:
    # A 4-byte uid whose bytes prefix a 7-byte one must not share its message layout.
    short, long = UID[:4], UID
    assert card_response(KEY, short, CHALLENGE) != card_response(KEY, long, CHALLENGE)


# --- verify never raises ---------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 15, 17, 32, 1000])
def test_response_of_wrong_length_is_rejected(length: int) -> None:
    response = card_response(KEY, UID, CHALLENGE)
    garbage = (response * 100)[:length]
    assert not verify_card_response(KEY, UID, CHALLENGE, garbage)


@pytest.mark.parametrize(
    ("key", "uid", "challenge"),
    [
        (KEY[:15], UID, CHALLENGE),
        (KEY + b"\0", UID, CHALLENGE),
        (KEY, UID[:5], CHALLENGE),
        (KEY, b"", CHALLENGE),
        (KEY, UID, CHALLENGE[:15]),
        (KEY, UID, b""),
    ],
)
def test_other_arguments_of_wrong_length_are_rejected(
    key: bytes, uid: bytes, challenge: bytes
) -> None:
    response = card_response(KEY, UID, CHALLENGE)
    assert not verify_card_response(key, uid, challenge, response)


def test_response_of_wrong_type_is_rejected() -> None:
    text = "x" * CARD_RESPONSE_SIZE
    assert not verify_card_response(KEY, UID, CHALLENGE, text)  # type: ignore[arg-type]


@given(garbage=st.binary(max_size=64))
def test_verify_never_raises_on_arbitrary_response_bytes(garbage: bytes) -> None:
    assume(garbage != card_response(KEY, UID, CHALLENGE))
    assert verify_card_response(KEY, UID, CHALLENGE, garbage) is False


# --- properties ------------------------------------------------------------------------


@given(key=keys, uid=uids, challenge=challenges)
def test_any_genuine_card_is_accepted(key: bytes, uid: bytes, challenge: bytes) -> None:
    card = Keycard(uid=uid, key=key)
    assert lock_accepts(card, challenge, enrolled_key=key)


@given(key=keys, uid=uids, challenge=challenges, bit=st.integers(0, 8 * CARD_RESPONSE_SIZE - 1))
def test_any_flipped_bit_is_rejected(key: bytes, uid: bytes, challenge: bytes, bit: int) -> None:
    response = bytearray(card_response(key, uid, challenge))
    response[bit // 8] ^= 1 << (bit % 8)
    assert not verify_card_response(key, uid, challenge, bytes(response))


@given(key=keys, other=keys, uid=uids, challenge=challenges)
def test_any_wrong_key_is_rejected(key: bytes, other: bytes, uid: bytes, challenge: bytes) -> None:
    assume(key != other)
    assert not verify_card_response(key, uid, challenge, card_response(other, uid, challenge))


@given(key=keys, uid=uids, first=challenges, second=challenges)
def test_any_replay_to_a_fresh_challenge_is_rejected(
    key: bytes, uid: bytes, first: bytes, second: bytes
) -> None:
    assume(first != second)
    recorded = card_response(key, uid, first)
    assert not verify_card_response(key, uid, second, recorded)


# --- Keycard validation and secrecy ----------------------------------------------------


def test_repr_does_not_show_the_key() -> None:
    card = Keycard(uid=UID, key=KEY)
    text = repr(card)
    assert UID.hex() in text or repr(UID) in text
    assert KEY.hex() not in text
    assert repr(KEY) not in text
    assert "key=" not in text


@pytest.mark.parametrize("uid_length", [0, 3, 5, 6, 8, 11])
def test_keycard_rejects_uid_of_wrong_length(uid_length: int) -> None:
    with pytest.raises(UsageError):
        Keycard(uid=bytes(uid_length), key=KEY)


@pytest.mark.parametrize("key_length", [0, 15, 17, 32])
def test_keycard_rejects_key_of_wrong_length(key_length: int) -> None:
    with pytest.raises(UsageError):
        Keycard(uid=UID, key=bytes(key_length))


def test_keycard_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Keycard(UID, KEY)  # type: ignore[call-arg]


def test_respond_rejects_challenge_of_wrong_length() -> None:
    with pytest.raises(UsageError):
        Keycard(uid=UID, key=KEY).respond(CHALLENGE[:8])


def test_card_response_rejects_bad_key() -> None:
    with pytest.raises(UsageError):
        card_response(KEY[:8], UID, CHALLENGE)


# --- key diversification ---------------------------------------------------------------


def _hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with an empty salt, written with the standard library only."""
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


MASTER = bytes(range(32))


def test_derive_card_key_is_hkdf_sha256_over_labelled_uid() -> None:
    expected = _hkdf_sha256(MASTER, b"LK1-CARD-KEY" + UID, CARD_KEY_SIZE)
    assert derive_card_key(MASTER, UID) == expected


def test_derived_keys_differ_per_uid_and_work_on_cards() -> None:
    key = derive_card_key(MASTER, UID)
    assert key != derive_card_key(MASTER, OTHER_UID)
    card = Keycard(uid=UID, key=key)
    assert lock_accepts(card, CHALLENGE, enrolled_key=derive_card_key(MASTER, UID))
    assert not lock_accepts(card, CHALLENGE, enrolled_key=derive_card_key(MASTER, OTHER_UID))


def test_derive_card_key_rejects_short_master_and_bad_uid() -> None:
    with pytest.raises(UsageError):
        derive_card_key(MASTER[:15], UID)
    with pytest.raises(UsageError):
        derive_card_key(MASTER, UID[:5])
