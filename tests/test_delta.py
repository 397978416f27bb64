"""Semantics of delta bundles and access decisions (``protocol/delta.py``,
``protocol/credential_list.py``; ``docs/protocol.md`` §5.3, §6.2.2).

The property at the heart of the sync engine: a bundle from base *b* to target *t*
takes a list at any version *v* with ``b <= v < t`` to exactly the list at *t*;
below *b* it is a :class:`BaseVersionError`, at *t* an idempotent no-op with a
byte-identical receipt, above *t* a :class:`RollbackError`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol import (
    FOREVER,
    ApplyOutcome,
    BaseVersionError,
    Credential,
    CredentialHistory,
    CredentialKind,
    CredentialList,
    CredentialStatus,
    DigestMismatchError,
    Reason,
    Remove,
    RollbackError,
    SealedBundle,
    Upsert,
    UsageError,
    Window,
    apply_bundle,
    compute_delta,
    make_receipt,
)
from protocol.credential_list import CredentialKey
from simulators.fixture import World

WORLD = World()
DOOR = WORLD.door("delta door")
CLOUD_PUBLIC = WORLD.cloud_key.public_key()
CAPACITY = 100

# --- a small key space, so that histories revisit the same credentials ---------------------

KEYS: tuple[CredentialKey, ...] = (
    (int(CredentialKind.KEYCARD), bytes.fromhex("04a1b2c3")),
    (int(CredentialKind.KEYCARD), bytes.fromhex("04a1b2c3d4e5f6")),
    (int(CredentialKind.PERSON), b"person-1"),
    (int(CredentialKind.PERSON), b"person-2"),
)
WORKDAYS = Window(days=0b0011111, start_minute=8 * 60, end_minute=18 * 60)


def entry(
    key: CredentialKey,
    *,
    status: CredentialStatus = CredentialStatus.ACTIVE,
    valid_until: int = FOREVER,
    schedule: tuple[Window, ...] = (),
    card_key_byte: int = 1,
) -> Credential:
    kind = CredentialKind(key[0])
    card_key = bytes([card_key_byte]) * 16 if kind is CredentialKind.KEYCARD else b""
    return Credential(
        kind=kind,
        credential_id=key[1],
        status=status,
        valid_until=valid_until,
        schedule=schedule,
        card_key=card_key,
    )


attributes = st.fixed_dictionaries(
    {
        "status": st.sampled_from(CredentialStatus),
        "valid_until": st.sampled_from([FOREVER, 2_000_000_000]),
        "schedule": st.sampled_from([(), (WORKDAYS,)]),
        "card_key_byte": st.sampled_from([1, 2]),
    }
)
# One commit: the new state of each touched key (None = removed). The value sets are
# small, so histories often change a credential and later change it back.
commits = st.dictionaries(
    st.sampled_from(KEYS), st.none() | attributes, min_size=1, max_size=3
).map(lambda d: {key: None if a is None else entry(key, **a) for key, a in d.items()})

Commit = dict[CredentialKey, Credential | None]


def replay(commits_: list[Commit]) -> CredentialHistory:
    history = CredentialHistory(DOOR.door_id)
    for commit in commits_:
        history.commit(
            upserts=[e for e in commit.values() if e is not None],
            removals=[k for k, e in commit.items() if e is None],
        )
    return history


def seal(history: CredentialHistory, base: int) -> SealedBundle:
    return history.bundle(
        base,
        door_public=DOOR.sealing.public_key(),
        cloud_key=WORLD.cloud_key,
        key_epoch=0,
        ephemeral=WORLD.ephemeral(f"delta {base}"),
    )


def lock_apply(current: CredentialList, bundle: SealedBundle) -> ApplyOutcome:
    return apply_bundle(
        current,
        bundle.to_bytes(),
        cloud_public=CLOUD_PUBLIC,
        door_private=DOOR.sealing,
        capacity=CAPACITY,
    )


def same_list(a: CredentialList, b: CredentialList) -> bool:
    return (a.door_id, a.version, a.digest, dict(a)) == (b.door_id, b.version, b.digest, dict(b))


CARD = KEYS[0]
CHANGES_AND_CHANGES_BACK: list[Commit] = [
    {CARD: entry(CARD)},
    {CARD: entry(CARD, status=CredentialStatus.REVOKED)},
    {CARD: entry(CARD), KEYS[2]: entry(KEYS[2])},
    {KEYS[2]: None},
]


# --- the property ------------------------------------------------------------------------------


@settings(deadline=None, max_examples=80)
@given(st.lists(commits, min_size=1, max_size=7))
@example(CHANGES_AND_CHANGES_BACK)
def test_bundle_from_any_base_takes_every_covered_version_to_target(history_: list[Commit]) -> None:
    total = len(history_)
    lists = [replay(history_[:t]).current for t in range(total + 1)]  # lists[v]: the list at v
    for t in range(1, total + 1):
        history = replay(history_[:t])
        assert same_list(history.current, lists[t])
        for b in range(t):
            bundle = seal(history, b)
            for v, held in enumerate(lists):
                check_apply(held, bundle, target=lists[t], base=b, version=v)


def check_apply(
    held: CredentialList, bundle: SealedBundle, *, target: CredentialList, base: int, version: int
) -> None:
    t = target.version
    if version < base:
        with pytest.raises(BaseVersionError) as caught:
            lock_apply(held, bundle)
        assert (caught.value.current, caught.value.base, caught.value.target) == (version, base, t)
    elif version < t:
        outcome = lock_apply(held, bundle)
        assert outcome.changed
        assert same_list(outcome.held, target)
        assert outcome.held.to_bytes() == target.to_bytes()
        assert same_list(CredentialList.from_bytes(outcome.held.to_bytes()), target)
        again = lock_apply(outcome.held, bundle)
        assert not again.changed and again.held is outcome.held
        first = make_receipt(DOOR.identity, outcome.held, requested_version=t)
        second = make_receipt(DOOR.identity, again.held, requested_version=t)
        assert first.to_bytes() == second.to_bytes()
    elif version == t:
        outcome = lock_apply(held, bundle)
        assert not outcome.changed and outcome.held is held
    else:
        with pytest.raises(RollbackError) as rolled_back:
            lock_apply(held, bundle)
        assert (rolled_back.value.current, rolled_back.value.offered) == (version, t)


# --- the same, spelled out ------------------------------------------------------------------


def test_credential_that_changes_and_changes_back_is_carried_in_its_final_state() -> None:
    history = replay(CHANGES_AND_CHANGES_BACK)
    lists = [replay(CHANGES_AND_CHANGES_BACK[:t]).current for t in range(5)]
    assert history.delta(1) == (Upsert(entry(CARD)), Remove(CredentialKind.PERSON, b"person-1"))
    assert history.delta(3) == (Remove(CredentialKind.PERSON, b"person-1"),)
    # Version 1 and 4 hold the same entries (the card changed and changed back).
    assert dict(lists[1]) == dict(history.current) and lists[1].digest != history.current.digest
    for v in (1, 2, 3):
        assert same_list(lock_apply(lists[v], seal(history, 1)).held, history.current)


def test_compute_delta_carries_only_changes_after_base_in_key_order() -> None:
    history = replay(
        [
            {KEYS[3]: entry(KEYS[3])},
            {KEYS[0]: entry(KEYS[0])},
            {KEYS[3]: None, KEYS[1]: entry(KEYS[1])},
        ]
    )
    assert history.delta(2) == (Upsert(entry(KEYS[1])), Remove(CredentialKind.PERSON, b"person-2"))
    assert history.delta(1) == (
        Upsert(entry(KEYS[0])),
        Upsert(entry(KEYS[1])),
        Remove(CredentialKind.PERSON, b"person-2"),
    )
    assert compute_delta(history.current, {}, 0) == ()
    for base in (3, 4):
        with pytest.raises(UsageError):
            history.delta(base)
    with pytest.raises(UsageError):
        CredentialHistory(DOOR.door_id).commit()


def test_reapply_is_a_noop_with_byte_identical_receipt() -> None:
    history = replay([{CARD: entry(CARD)}])
    bundle = seal(history, 0)
    first = lock_apply(CredentialList.empty(DOOR.door_id), bundle)
    second = lock_apply(first.held, bundle)
    assert first.changed and not second.changed and second.held is first.held
    assert (
        make_receipt(DOOR.identity, first.held, requested_version=1).to_bytes()
        == make_receipt(DOOR.identity, second.held, requested_version=1).to_bytes()
    )


def test_base_above_held_version_raises_base_version() -> None:
    history = replay([{CARD: entry(CARD)}, {KEYS[2]: entry(KEYS[2])}])
    with pytest.raises(BaseVersionError):
        lock_apply(CredentialList.empty(DOOR.door_id), seal(history, 1))


def test_target_older_than_held_raises_rollback() -> None:
    older = seal(replay([{CARD: entry(CARD)}]), 0)
    newer = replay([{CARD: entry(CARD)}, {CARD: None}]).current
    with pytest.raises(RollbackError):
        lock_apply(newer, older)


def test_equal_version_with_other_digest_raises_digest_mismatch() -> None:
    held = replay([{CARD: entry(CARD)}]).current
    other = seal(replay([{KEYS[2]: entry(KEYS[2])}]), 0)  # also version 1, another list
    assert other.target_version == held.version and other.target_digest != held.digest
    with pytest.raises(DigestMismatchError):
        lock_apply(held, other)


# --- Credential.decide at the edges ---------------------------------------------------------

MONDAY = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())  # 2024-01-01 was a Monday
DAY, HOUR, MINUTE = 86400, 3600, 60


def person(**fields: object) -> Credential:
    return Credential(kind=CredentialKind.PERSON, credential_id=b"p", **fields)  # type: ignore[arg-type]


def test_decide_validity_window_edges() -> None:
    c = person(valid_from=MONDAY, valid_until=MONDAY + DAY)
    assert c.decide(MONDAY - 1) is Reason.NOT_YET_VALID
    assert c.decide(MONDAY) is Reason.GRANTED
    assert c.decide(MONDAY + DAY - 1) is Reason.GRANTED
    assert c.decide(MONDAY + DAY) is Reason.EXPIRED
    # The window is absolute (UTC): a local offset does not move it.
    assert c.decide(MONDAY - 1, utc_offset_minutes=600) is Reason.NOT_YET_VALID
    assert c.decide(MONDAY + DAY, utc_offset_minutes=-600) is Reason.EXPIRED
    assert person().decide(0) is Reason.GRANTED
    assert person().decide(FOREVER - 1) is Reason.GRANTED


def test_decide_revoked_wins_over_everything() -> None:
    c = person(
        status=CredentialStatus.REVOKED,
        valid_from=MONDAY,
        valid_until=MONDAY + DAY,
        schedule=(WORKDAYS,),
    )
    for now in (MONDAY - 1, MONDAY + 9 * HOUR, MONDAY + DAY, MONDAY + 2 * HOUR):
        assert c.decide(now) is Reason.REVOKED


def test_decide_validity_checked_before_schedule() -> None:
    c = person(valid_from=MONDAY + DAY, valid_until=MONDAY + 2 * DAY, schedule=(WORKDAYS,))
    assert c.decide(MONDAY + 2 * HOUR) is Reason.NOT_YET_VALID
    assert c.decide(MONDAY + 2 * DAY + 9 * HOUR) is Reason.EXPIRED


@pytest.mark.parametrize("offset", [0, 60, -300, 330, 840, -720])
def test_decide_schedule_start_inclusive_end_exclusive_in_local_time(offset: int) -> None:
    c = person(schedule=(Window(days=0b0000001, start_minute=8 * 60, end_minute=17 * 60),))
    start = MONDAY + 8 * HOUR - offset * MINUTE  # 08:00 local on Monday, in UTC
    end = MONDAY + 17 * HOUR - offset * MINUTE
    assert c.decide(start - 1, utc_offset_minutes=offset) is Reason.OUTSIDE_SCHEDULE
    assert c.decide(start, utc_offset_minutes=offset) is Reason.GRANTED
    assert c.decide(end - 1, utc_offset_minutes=offset) is Reason.GRANTED
    assert c.decide(end, utc_offset_minutes=offset) is Reason.OUTSIDE_SCHEDULE
    # The same wall-clock times a week later, and a day later (Tuesday: not in the mask).
    assert c.decide(start + 7 * DAY, utc_offset_minutes=offset) is Reason.GRANTED
    assert c.decide(start + DAY, utc_offset_minutes=offset) is Reason.OUTSIDE_SCHEDULE


def test_decide_schedule_offset_moves_the_local_day() -> None:
    sunday_only = person(schedule=(Window(days=0b1000000, start_minute=0, end_minute=1440),))
    early_monday_utc = MONDAY + 2 * HOUR  # Sunday 21:00 at UTC-5
    assert sunday_only.decide(early_monday_utc) is Reason.OUTSIDE_SCHEDULE
    assert sunday_only.decide(early_monday_utc, utc_offset_minutes=-300) is Reason.GRANTED
    late_sunday_utc = MONDAY - 2 * HOUR  # Monday 01:00 at UTC+3
    assert sunday_only.decide(late_sunday_utc) is Reason.GRANTED
    assert sunday_only.decide(late_sunday_utc, utc_offset_minutes=180) is Reason.OUTSIDE_SCHEDULE


def test_decide_whole_day_window_ends_at_midnight() -> None:
    monday = person(schedule=(Window(days=0b0000001, start_minute=0, end_minute=1440),))
    assert monday.decide(MONDAY - 1) is Reason.OUTSIDE_SCHEDULE  # Sunday 23:59:59
    assert monday.decide(MONDAY) is Reason.GRANTED
    assert monday.decide(MONDAY + DAY - 1) is Reason.GRANTED  # 23:59:59
    assert monday.decide(MONDAY + DAY) is Reason.OUTSIDE_SCHEDULE


@pytest.mark.parametrize("weekday", range(7))
def test_decide_weekday_bits(weekday: int) -> None:
    c = person(schedule=(Window(days=1 << weekday, start_minute=0, end_minute=1440),))
    for day in range(7):
        expected = Reason.GRANTED if day == weekday else Reason.OUTSIDE_SCHEDULE
        assert c.decide(MONDAY + day * DAY + 12 * HOUR) is expected, day


def test_decide_any_window_of_several() -> None:
    c = person(
        schedule=(
            Window(days=0b0000001, start_minute=0, end_minute=60),
            Window(days=0b0000010, start_minute=1380, end_minute=1440),
        )
    )
    assert c.decide(MONDAY + 30 * MINUTE) is Reason.GRANTED
    assert c.decide(MONDAY + DAY + 23 * HOUR) is Reason.GRANTED
    assert c.decide(MONDAY + 23 * HOUR) is Reason.OUTSIDE_SCHEDULE
    assert c.decide(MONDAY + DAY + 30 * MINUTE) is Reason.OUTSIDE_SCHEDULE
