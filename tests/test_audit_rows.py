"""The cloud's row parse of an audit batch agrees with the message parse, error for error.

Theory of operation: :meth:`AuditBatch.verified_rows` gives the cloud a verified batch's
events as wire rows, building no :class:`AuditEvent`. It must accept exactly what
:meth:`AuditBatch.verified_from_bytes` accepts, yield the same events (fields and exact
encodings), and refuse everything else with the same error class, message and fields,
signature faults first. The inputs are the malformed bodies of
``tests/test_audit_codec_speed.py``, arbitrary bytes and one-byte changes, each signed
with the lock's key, plus payloads whose signature does not verify.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import example, given
from hypothesis import strategies as st

from protocol import DEFAULT_LIMITS, AuditBatch, Limits
from protocol.crypto import sign
from protocol.errors import ProtocolError
from tests.strategies import audit_batches
from tests.test_audit_codec_speed import declared_body, limits, raw_bodies

LOCK = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _signed(body: bytes, key: Ed25519PrivateKey = LOCK) -> bytes:
    return body + sign(key, AuditBatch.CONTEXT, body)


def _error(exc: ProtocolError) -> tuple[Any, ...]:
    return ("error", type(exc), str(exc), vars(exc))


def _by_message(payload: bytes, limit: Limits) -> tuple[Any, ...]:
    try:
        batch = AuditBatch.verified_from_bytes(payload, LOCK.public_key(), limits=limit)
    except ProtocolError as exc:
        return _error(exc)
    events = [
        (e.seq, e.time, int(e.kind), e.reason, e.credential_id, e.detail, e.to_bytes())
        for e in batch.events
    ]
    return ("ok", batch.door_id, events)


def _by_rows(payload: bytes, limit: Limits) -> tuple[Any, ...]:
    try:
        door_id, rows = AuditBatch.verified_rows(payload, LOCK.public_key(), limits=limit)
    except ProtocolError as exc:
        return _error(exc)
    assert all(type(row[2]) is int for row in rows)  # a plain int, as the cloud stores it
    return ("ok", door_id, [tuple(row) for row in rows])


def assert_same(payload: bytes, limit: Limits = DEFAULT_LIMITS) -> tuple[Any, ...]:
    rows = _by_rows(payload, limit)
    assert rows == _by_message(payload, limit)
    return rows


@given(batch=audit_batches())
def test_valid_batches_give_their_events_as_rows(batch: AuditBatch) -> None:
    outcome = assert_same(_signed(declared_body(batch)))
    assert outcome[0] == "ok"
    assert [row[0] for row in outcome[2]] == [e.seq for e in batch.events]


@given(batch=audit_batches(max_events=10), limit=limits)
def test_the_event_limit_is_applied_identically(batch: AuditBatch, limit: Limits) -> None:
    outcome = assert_same(_signed(declared_body(batch)), limit)
    assert (outcome[0] == "ok") == (len(batch.events) <= limit.max_audit_events)


@given(body=raw_bodies(), limit=limits)
@example(body=bytes(16) + b"\x00\x00", limit=Limits()).via("empty batch")
@example(body=bytes(17), limit=Limits()).via("truncated count")
def test_malformed_bodies_are_refused_identically(body: bytes, limit: Limits) -> None:
    assert_same(_signed(body), limit)


@given(body=st.binary(max_size=80))
def test_arbitrary_bytes_are_refused_identically(body: bytes) -> None:
    assert_same(_signed(body))


@given(batch=audit_batches(max_events=4), position=st.integers(0, 10_000), value=st.data())
def test_a_changed_byte_is_judged_identically(
    batch: AuditBatch, position: int, value: st.DataObject
) -> None:
    body = bytearray(declared_body(batch))
    position %= len(body)
    body[position] = value.draw(st.integers(0, 255))
    assert_same(_signed(bytes(body)))


@given(body=raw_bodies(), cut=st.integers(0, 200))
@example(body=bytes(16) + b"\x00\x00", cut=200).via("short payload")
def test_the_signature_is_checked_first(body: bytes, cut: int) -> None:
    """A body signed by another key, or a payload cut short, is refused for its signature
    (or its length), whatever the body holds, by both parses alike."""
    outcome = assert_same(_signed(body, OTHER))
    assert outcome[1].__name__ == "AuthenticationError"
    short = _signed(body)[: min(cut, 63)]
    assert assert_same(short)[1].__name__ == "TruncatedError"
