"""The simulators' deterministic stand-ins for ``os.urandom``."""

from __future__ import annotations

from simulators.fixture import counting_random, seeded_random


def test_seeded_random_repeats_its_stream_for_a_label_and_differs_between_labels() -> None:
    first, again, other = seeded_random("lock a"), seeded_random("lock a"), seeded_random("lock b")
    drawn = [first(16), first(7), first(32)]
    assert [again(16), again(7), again(32)] == drawn
    assert [len(b) for b in drawn] == [16, 7, 32]
    assert len(set(drawn)) == 3  # successive draws differ
    assert other(16) != drawn[0]


def test_counting_random_gives_the_nth_labelled_bytes() -> None:
    draw = counting_random("x")
    assert draw(8) != draw(8)
    assert counting_random("x")(8) == counting_random("x")(8)
