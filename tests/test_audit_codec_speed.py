"""The fast audit codec agrees with the construct declaration, byte for byte.

Theory of operation: ``protocol/audit.py`` declares the §6.4 layout once with
construct (:data:`protocol.audit.EventFormat`, ``AuditBatch._FORMAT``) and encodes
and decodes with precompiled :mod:`struct` code plus a per-event encoding cache.
These properties pin the fast path to the declaration:

* encode: every event's ``to_bytes()`` (first call and cached) and every batch body
  equal what the declaration builds, whichever way the event was made (validated
  constructor, ``unchecked``, decoded, copied);
* decode: for valid and malformed bodies alike, the fast ``_parse_body`` and the
  generic construct path (:meth:`SignedMessage._parse_body` over ``_FORMAT``) give
  equal batches, or raise the same error class with the same message and fields;
  the same holds for AUDIT_ACK bodies;
* sign: a lock's one-step ``signed_frame`` equals ``signed(key).to_frame()``, and the
  gapless check names the first event out of sequence, as the plain loop does.

Malformed bodies are built by hand with ``int.to_bytes`` from raw field values
(kinds out of range, ids over 16 bytes, gaps, wrong counts, truncation, trailing
bytes) and also drawn as arbitrary bytes.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol import (
    DEFAULT_LIMITS,
    AuditAck,
    AuditBatch,
    AuditEvent,
    AuditEventKind,
    Limits,
    decode_message,
)
from protocol.audit import EventFormat
from protocol.errors import AuditGapError, ProtocolError
from tests.strategies import U32_MAX, audit_acks, audit_batches, audit_events, door_ids, signatures

SIGNATURE = bytes(range(64))
FAST = AuditBatch._parse_body
REFERENCE = super(AuditBatch, AuditBatch)._parse_body  # construct, via SignedMessage


def declared_event(event: AuditEvent) -> bytes:
    """What the construct declaration builds for ``event``."""
    return bytes(EventFormat.build(event.to_container()))


def declared_body(batch: AuditBatch) -> bytes:
    """What ``AuditBatch._FORMAT`` builds for ``batch``'s body."""
    container = {"door_id": batch.door_id, "events": [e.to_container() for e in batch.events]}
    return bytes(AuditBatch._FORMAT.build(container))


def outcome(parse: Callable[[], AuditBatch]) -> tuple[Any, ...]:
    """A comparable summary of a parse: the batch and its events' encodings, or the error."""
    try:
        batch = parse()
    except ProtocolError as exc:
        return ("error", type(exc), str(exc), vars(exc))
    return ("ok", batch, [e.to_bytes() for e in batch.events], batch.to_bytes())


def assert_same_decoding(body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, ...]:
    """The fast and the construct decoder agree on ``body``; return the outcome."""
    fast = outcome(lambda: FAST(body, SIGNATURE, limits))
    reference = outcome(lambda: REFERENCE(body, SIGNATURE, limits))
    assert fast == reference
    return fast


# --- encode -------------------------------------------------------------------------------


@given(event=st.integers(0, U32_MAX).flatmap(audit_events))
def test_event_encoding_matches_declaration(event: AuditEvent) -> None:
    expected = declared_event(event)
    assert event.to_bytes() == expected
    assert event.to_bytes() is event.to_bytes()  # cached: a resend costs nothing
    assert len(expected) == 15 + len(event.credential_id)


@given(event=st.integers(0, U32_MAX).flatmap(audit_events))
def test_unchecked_copied_and_replayed_events_encode_like_the_declaration(
    event: AuditEvent,
) -> None:
    fields = (event.seq, event.time, event.kind, event.reason, event.credential_id, event.detail)
    unchecked = AuditEvent.unchecked(*fields)
    replayed = AuditEvent.from_container(EventFormat.parse(declared_event(event)))
    event.to_bytes()  # fill the cache first: copies must not depend on it
    for other in (unchecked, replayed, copy.copy(event), pickle.loads(pickle.dumps(event))):
        assert other == event
        assert other.to_bytes() == declared_event(event)


@given(batch=audit_batches())
def test_batch_body_matches_declaration(batch: AuditBatch) -> None:
    body = declared_body(batch)
    assert batch.body_bytes() == body
    assert batch.to_bytes() == body + batch.signature
    # The same events resent in a later batch (cache warm) encode identically.
    resent = AuditBatch(door_id=batch.door_id, events=batch.events, signature=batch.signature)
    assert resent.body_bytes() == body


# --- decode: valid bodies -----------------------------------------------------------------


@given(batch=audit_batches())
def test_valid_batches_decode_identically(batch: AuditBatch) -> None:
    result = assert_same_decoding(declared_body(batch))
    assert result[0] == "ok"
    decoded = result[1]
    assert decoded == AuditBatch(door_id=batch.door_id, events=batch.events, signature=SIGNATURE)
    assert [e.to_bytes() for e in decoded.events] == [declared_event(e) for e in batch.events]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(batch=audit_batches())
def test_frames_decode_to_the_same_batch_and_frame(batch: AuditBatch) -> None:
    decoded = decode_message(batch.to_frame())
    assert decoded == batch
    assert decoded.to_frame() == batch.to_frame()


# --- decode: malformed bodies -------------------------------------------------------------

FAULTS = ("none", "kind", "long id", "gap", "count", "cut", "trailing")
BAD_KINDS = sorted(set(range(256)) - {int(k) for k in AuditEventKind})


@st.composite
def raw_event(draw: st.DrawFn, seq: int, *, bad_kind: bool, long_id: bool) -> bytes:
    """One §6.4 event built by hand from raw field values, optionally invalid ones."""
    kind = draw(st.sampled_from(BAD_KINDS if bad_kind else [int(k) for k in AuditEventKind]))
    credential_id = draw(
        st.binary(min_size=17, max_size=255) if long_id else st.binary(max_size=16)
    )
    return b"".join(
        [
            seq.to_bytes(4, "big"),
            draw(st.integers(0, U32_MAX)).to_bytes(4, "big"),
            bytes([kind, draw(st.integers(0, 255)), len(credential_id)]),
            credential_id,
            draw(st.integers(0, U32_MAX)).to_bytes(4, "big"),
        ]
    )


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """An AUDIT_BATCH body with one or more of the §6.4 faults (or none)."""
    faults = draw(st.sets(st.sampled_from(FAULTS), min_size=1, max_size=2))
    count = draw(st.integers(0 if "count" in faults else 1, 6))
    first = draw(st.integers(0, U32_MAX - 6))
    seqs = [first + i for i in range(count)]
    if count and "gap" in faults:  # a gap, a repeat or a wild sequence number
        seqs[draw(st.integers(0, count - 1))] = draw(st.integers(0, U32_MAX))
    bad = draw(st.integers(0, max(count - 1, 0)))
    events = [
        draw(
            raw_event(
                seq,
                bad_kind=i == bad and "kind" in faults,
                long_id=i == bad and "long id" in faults,
            )
        )
        for i, seq in enumerate(seqs)
    ]
    announced = draw(st.integers(0, 0xFFFF)) if "count" in faults else count
    body = draw(door_ids) + announced.to_bytes(2, "big") + b"".join(events)
    if "cut" in faults:
        body = body[: draw(st.integers(0, len(body) - 1))]
    if "trailing" in faults:
        body += draw(st.binary(min_size=1, max_size=30))
    return body


limits = st.builds(Limits, max_audit_events=st.integers(1, 8))


@given(body=raw_bodies(), limit=limits)
@example(body=bytes(16) + b"\x00\x00", limit=Limits()).via("empty batch")
@example(body=bytes(17), limit=Limits()).via("truncated count")
def test_malformed_bodies_are_refused_identically(body: bytes, limit: Limits) -> None:
    assert_same_decoding(body, limit)


@given(body=st.binary(max_size=80))
def test_arbitrary_bytes_are_refused_identically(body: bytes) -> None:
    assert_same_decoding(body)


@given(batch=audit_batches(max_events=4), position=st.integers(0, 10_000), value=st.data())
def test_a_changed_byte_is_judged_identically(
    batch: AuditBatch, position: int, value: st.DataObject
) -> None:
    body = bytearray(declared_body(batch))
    position %= len(body)
    body[position] = value.draw(st.integers(0, 255))
    assert_same_decoding(bytes(body))


@given(door_id=door_ids, signature=signatures, first=st.integers(1, 1000))
def test_full_signed_payload_decodes_identically(
    door_id: bytes, signature: bytes, first: int
) -> None:
    events = tuple(
        AuditEvent(seq=first + i, time=i, kind=AuditEventKind.BOOT, detail=i) for i in range(3)
    )
    payload = AuditBatch(door_id=door_id, events=events, signature=signature).to_bytes()
    body, sig = payload[:-64], payload[-64:]
    assert AuditBatch.from_bytes(payload) == REFERENCE(body, sig, Limits())


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(batch=audit_batches())
def test_a_signed_frame_is_the_signed_batch_s_frame(batch: AuditBatch) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    unsigned = dataclasses.replace(batch, signature=b"")
    assert unsigned.signed_frame(key) == unsigned.signed(key).to_frame()
    restored = pickle.loads(pickle.dumps(unsigned))  # events without their encoding caches
    assert restored.signed_frame(key) == unsigned.signed(key).to_frame()


def _first_gap(seqs: list[int]) -> tuple[int, int] | None:
    """The (expected, actual) of the first event out of sequence, by the §6.4 rule."""
    for offset, seq in enumerate(seqs):
        if seq != seqs[0] + offset:
            return seqs[0] + offset, seq
    return None


@given(
    first=st.integers(0, 1000),
    steps=st.lists(st.sampled_from([1, 1, 1, 0, 2, -1]), max_size=30),
)
def test_a_gap_is_refused_at_the_first_event_out_of_sequence(first: int, steps: list[int]) -> None:
    seqs = [first]
    for step in steps:
        seqs.append(max(0, seqs[-1] + step))
    events = tuple(AuditEvent(seq=s, time=0, kind=AuditEventKind.BOOT) for s in seqs)
    gap = _first_gap(seqs)
    try:
        AuditBatch(door_id=bytes(16), events=events)
    except AuditGapError as exc:
        assert (exc.expected, exc.actual) == gap
    else:
        assert gap is None


# --- AUDIT_ACK: the struct decoder agrees with the declaration -----------------------------

ACK_FAST = AuditAck._parse_body
ACK_REFERENCE = super(AuditAck, AuditAck)._parse_body  # construct, via SignedMessage


def _ack_outcome(parse: Callable[[], AuditAck]) -> tuple[Any, ...]:
    try:
        ack = parse()
    except ProtocolError as exc:
        return ("error", type(exc), str(exc), vars(exc))
    return ("ok", ack, ack.to_bytes())


@given(ack=audit_acks(), cut=st.integers(0, 30), extra=st.binary(max_size=3))
def test_ack_bodies_decode_identically(ack: AuditAck, cut: int, extra: bytes) -> None:
    body = ack.to_bytes()[:-64]
    for candidate in (body, body[:cut], body + extra):
        fast = _ack_outcome(partial(ACK_FAST, candidate, SIGNATURE, DEFAULT_LIMITS))
        assert fast == _ack_outcome(partial(ACK_REFERENCE, candidate, SIGNATURE, DEFAULT_LIMITS))


@given(body=st.binary(max_size=40), signature=st.binary(max_size=70))
def test_arbitrary_ack_bytes_decode_identically(body: bytes, signature: bytes) -> None:
    fast = _ack_outcome(lambda: ACK_FAST(body, signature, DEFAULT_LIMITS))
    assert fast == _ack_outcome(lambda: ACK_REFERENCE(body, signature, DEFAULT_LIMITS))
