"""The benchmark's signature counter sees every Ed25519 operation and leaves no trace."""

from __future__ import annotations

import pytest

from bench._signatures import SignatureCount, UnitCosts, counted
from protocol import crypto
from protocol.audit import AuditAck
from protocol.crypto import SignContext, ed25519_private_from_seed
from protocol.errors import AuthenticationError

KEY = ed25519_private_from_seed(bytes(range(32)))


def test_counts_signs_and_verifies_made_directly_and_through_importing_modules() -> None:
    body = b"an audit batch body"
    with counted() as count:
        signature = crypto.sign(KEY, SignContext.AUDIT_BATCH, body)
        crypto.verify(KEY.public_key(), SignContext.AUDIT_BATCH, body, signature)
        with pytest.raises(AuthenticationError):
            crypto.verify(KEY.public_key(), SignContext.AUDIT_BATCH, body + b"!", signature)
        ack = AuditAck(door_id=bytes(16), key_epoch=0, up_to_seq=7).signed(KEY)
        AuditAck.verified_from_bytes(ack.to_bytes(), KEY.public_key())
    assert (count.signs, count.verifies) == (2, 3)


def test_restores_the_functions_even_when_the_block_raises() -> None:
    import protocol._message as message

    sign, verify = crypto.sign, crypto.verify
    assert vars(message)["sign"] is sign
    with pytest.raises(RuntimeError), counted():
        assert crypto.sign is not sign and vars(message)["sign"] is not sign
        raise RuntimeError("boom")
    assert (crypto.sign, crypto.verify, vars(message)["sign"]) == (sign, verify, sign)


def test_the_floor_is_counts_times_unit_costs() -> None:
    count = SignatureCount(signs=3, verifies=2)
    assert count.floor_s(UnitCosts(sign_s=0.5, verify_s=2.0)) == pytest.approx(5.5)
