"""Hostile bytes into every parser: a typed protocol error, never a crash.

Theory of operation: the seeded mutation loop of :mod:`tests.fuzzing` feeds each
target of :data:`tests.fuzzing.TARGETS` a fixed number of inputs (over 100,000 in
all); hypothesis adds ``st.binary()`` inputs per target. Any exception that is not
a :class:`~protocol.errors.ProtocolError` — or is a ``UsageError``, which bytes from
the air must never cause — fails the test with the input in hex.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import REGISTRY, UsageError
from protocol.frame import MAGIC, encode_frame
from tests import fuzzing
from tests.fuzzing import CORPUS, TARGETS, FuzzCrash, mutations, outcome, run, run_target

SEED = 20_260_127
PER_TARGET = 15_000
"""Inputs per cheap target; crypto-heavy ones get their :data:`fuzzing.WEIGHTS` share."""

NAMES = sorted(TARGETS)


def budget(name: str) -> int:
    return int(PER_TARGET * fuzzing.WEIGHTS.get(name, 1.0))


def test_the_suite_feeds_at_least_100_000_inputs() -> None:
    assert sum(budget(name) for name in NAMES) >= 100_000


def test_every_parser_is_a_target() -> None:
    for cls in REGISTRY.values():
        assert f"{cls.__name__}.from_bytes" in TARGETS
    assert set(CORPUS) == set(TARGETS)


@pytest.mark.parametrize("name", NAMES)
def test_mutated_inputs_raise_only_protocol_errors(name: str) -> None:
    counts = run_target(name, budget(name), SEED)
    assert sum(counts.values()) == budget(name)
    assert counts["ok"] > 0, f"{name}: no input was accepted, the fuzz stays shallow"
    assert len(counts) > 1, f"{name}: no input was rejected"


@pytest.mark.parametrize("name", NAMES)
def test_every_target_accepts_a_seed_of_its_corpus(name: str) -> None:
    assert "ok" in {outcome(TARGETS[name], seed) for seed in CORPUS[name]}


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=512))
def test_random_bytes_raise_only_protocol_errors(name: str, data: bytes) -> None:
    outcome(TARGETS[name], data)


@pytest.mark.parametrize("name", ["Frame.from_bytes", "decode_message"])
@settings(max_examples=300, deadline=None)
@given(message_type=st.integers(0, 255), payload=st.binary(max_size=300))
def test_random_payloads_in_valid_frames_raise_only_protocol_errors(
    name: str, message_type: int, payload: bytes
) -> None:
    frame = encode_frame(message_type, payload)
    outcome(TARGETS[name], frame)


# --- the harness itself ---------------------------------------------------------------------


def test_run_is_deterministic_and_counts_every_input() -> None:
    first, second = run(3_000, seed=7), run(3_000, seed=7)
    assert first == second
    assert sum(first.values()) == 3_000
    assert first["ok"] > 0 and len(first) > 3


def test_mutations_are_deterministic_and_varied() -> None:
    first = list(itertools.islice(mutations(11), 500))
    assert first == list(itertools.islice(mutations(11), 500))
    assert first != list(itertools.islice(mutations(12), 500))
    assert len(set(first)) > 400


def test_mutations_keep_many_frames_past_the_checksum() -> None:
    frames = list(itertools.islice(mutations(5, CORPUS["decode_message"]), 2_000))
    outcomes = Counter(outcome(TARGETS["Frame.from_bytes"], f) for f in frames)
    assert outcomes["ok"] > 300
    assert sum(f.startswith(MAGIC) for f in frames) > 1_000


def test_a_crash_is_reported_with_its_input() -> None:
    def fragile(data: bytes) -> None:
        if len(data) > 3:
            raise IndexError("boom")

    with pytest.raises(FuzzCrash) as info:
        run_target("x", 1_000, 1, targets={"x": fragile}, corpus={"x": [b"abcd"]})
    assert len(info.value.data) > 3 and isinstance(info.value.error, IndexError)


def test_a_usage_error_from_bytes_is_a_crash() -> None:
    def misuse(data: bytes) -> None:
        raise UsageError("local bug")

    with pytest.raises(FuzzCrash):
        run_target("x", 1, 1, targets={"x": misuse}, corpus={"x": [b""]})
