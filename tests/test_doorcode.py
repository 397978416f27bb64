"""Offline keypad doorcodes: issue, check, window edges, malformed input."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.doorcode import (
    DoorcodeKind,
    DoorcodeMatch,
    check_doorcode,
    doorcode_window,
    issue_doorcode,
)
from protocol.errors import UsageError

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
DOOR = bytes.fromhex("d00d00d00d00d00d00d00d00d00d00d0")
OTHER_DOOR = bytes.fromhex("0123456789abcdef0123456789abcdef")
T = 1_700_000_000  # 2023-11-14 22:13:20 UTC
DAY = 86_400
QUARTER = 900

DAILY = DoorcodeKind.DAILY
QUARTER_HOUR = DoorcodeKind.QUARTER_HOUR


def issue(kind: DoorcodeKind, at: int, *, slot: int = 0, offset: int = 0) -> str:
    return issue_doorcode(
        secret=SECRET, door_id=DOOR, kind=kind, at=at, slot=slot, utc_offset_minutes=offset
    )


def check(code: str, now: int, *, offset: int = 0) -> DoorcodeMatch | None:
    return check_doorcode(code, secret=SECRET, door_id=DOOR, now=now, utc_offset_minutes=offset)


# --- an independent computation --------------------------------------------------------


def _reference_code(kind: int, window: int, slot: int) -> str:
    """The code per the spec, with the standard library only (RFC 4226 §5.3 truncation)."""
    message = b"LK1-CODE" + bytes([kind]) + DOOR + window.to_bytes(4, "big") + bytes([slot])
    digest = hmac.new(SECRET, message, hashlib.sha256).digest()
    offset = digest[31] & 0xF
    value = (
        (digest[offset] & 0x7F) << 24
        | digest[offset + 1] << 16
        | digest[offset + 2] << 8
        | digest[offset + 3]
    )
    return str(kind) + str(slot).zfill(2) + str(value % 100_000).zfill(5)


def test_daily_code_matches_hand_computed_value() -> None:
    assert issue(DAILY, T, slot=7) == _reference_code(1, T // DAY, 7)


def test_quarter_hour_code_matches_hand_computed_value_with_offset() -> None:
    expected = _reference_code(2, (T + 330 * 60) // QUARTER, 42)
    assert issue(QUARTER_HOUR, T, slot=42, offset=330) == expected


def test_golden_values() -> None:
    # Recorded once from _reference_code; a change here invalidates every issued code.
    assert issue(DAILY, T, slot=7) == "10765699"
    assert issue(QUARTER_HOUR, T, slot=42, offset=330) == "24213545"


# --- DAILY windows -----------------------------------------------------------------------


def test_daily_code_is_accepted_at_issue_time() -> None:
    match = check(issue(DAILY, T), T)
    start, end = doorcode_window(DAILY, T, 0)
    assert match == DoorcodeMatch(kind=DAILY, slot=0, window_start=start, window_end=end)


def test_daily_code_is_accepted_on_first_and_last_second_of_its_day() -> None:
    start, end = doorcode_window(DAILY, T, 0)
    code = issue(DAILY, T)
    assert check(code, start) is not None
    assert check(code, end - 1) is not None


def test_daily_code_is_rejected_one_second_outside_its_day() -> None:
    start, end = doorcode_window(DAILY, T, 0)
    code = issue(DAILY, T)
    assert check(code, start - 1) is None
    assert check(code, end) is None


@pytest.mark.parametrize("offset", [120, -300, 330, 1440, -1440])
def test_daily_code_follows_local_midnight(offset: int) -> None:
    start, end = doorcode_window(DAILY, T, offset)
    assert (start + offset * 60) % DAY == 0  # a local midnight
    assert end - start == DAY
    assert start <= T < end
    code = issue(DAILY, T, offset=offset)
    assert check(code, start, offset=offset) is not None
    assert check(code, end - 1, offset=offset) is not None
    assert check(code, start - 1, offset=offset) is None
    assert check(code, end, offset=offset) is None


def test_daily_code_depends_on_the_offset_near_utc_midnight() -> None:
    utc_midnight = (T // DAY + 1) * DAY
    at = utc_midnight - 60  # 23:59 UTC, already 01:59 next day at UTC+2
    assert issue(DAILY, at, offset=120) == issue(DAILY, utc_midnight, offset=0)
    assert issue(DAILY, at, offset=120) != issue(DAILY, at, offset=0)


# --- QUARTER_HOUR windows ----------------------------------------------------------------


def test_quarter_hour_code_is_accepted_on_the_edges_of_its_window() -> None:
    start, end = doorcode_window(QUARTER_HOUR, T, 0)
    assert end - start == QUARTER
    code = issue(QUARTER_HOUR, T)
    assert check(code, start) is not None
    assert check(code, end - 1) is not None
    assert check(code, start - 1) is None


def test_quarter_hour_code_is_accepted_in_the_next_window_too() -> None:
    start, end = doorcode_window(QUARTER_HOUR, T, 0)
    code = issue(QUARTER_HOUR, T)
    match = check(code, end)
    assert match == DoorcodeMatch(kind=QUARTER_HOUR, slot=0, window_start=start, window_end=end)
    assert check(code, end + QUARTER - 1) is not None
    assert match.valid_until == end + QUARTER


def test_quarter_hour_code_is_rejected_two_windows_later() -> None:
    _, end = doorcode_window(QUARTER_HOUR, T, 0)
    code = issue(QUARTER_HOUR, T)
    assert check(code, end + QUARTER) is None
    assert check(code, end + 10 * QUARTER) is None


def test_quarter_hour_code_is_not_accepted_before_its_window() -> None:
    code = issue(QUARTER_HOUR, T + QUARTER)
    assert check(code, T) is None


def test_daily_code_has_no_grace_day() -> None:
    match = check(issue(DAILY, T), T)
    assert match is not None
    assert match.valid_until == match.window_end


def test_quarter_hour_code_in_the_first_window_of_the_epoch() -> None:
    code = issue(QUARTER_HOUR, 0)
    assert check(code, 0) is not None
    assert check(code, QUARTER) is not None


# --- binding to door, secret, kind and slot ------------------------------------------------


@pytest.mark.parametrize("kind", list(DoorcodeKind))
def test_code_for_another_door_is_rejected(kind: DoorcodeKind) -> None:
    code = issue_doorcode(secret=SECRET, door_id=OTHER_DOOR, kind=kind, at=T)
    assert check(code, T) is None


@pytest.mark.parametrize("kind", list(DoorcodeKind))
def test_code_from_another_secret_is_rejected(kind: DoorcodeKind) -> None:
    code = issue_doorcode(secret=OTHER_SECRET, door_id=DOOR, kind=kind, at=T)
    assert check(code, T) is None


def test_changing_the_kind_digit_is_rejected() -> None:
    code = issue(DAILY, T)
    assert check("2" + code[1:], T) is None


def test_changing_the_slot_digits_is_rejected() -> None:
    code = issue(DAILY, T, slot=5)
    assert check(code[0] + "06" + code[3:], T) is None


@pytest.mark.parametrize("slot", [0, 1, 9, 10, 42, 99])
def test_slot_round_trips(slot: int) -> None:
    code = issue(QUARTER_HOUR, T, slot=slot)
    assert code[1:3] == f"{slot:02d}"
    match = check(code, T)
    assert match is not None
    assert match.slot == slot


def test_each_slot_gives_a_distinct_code() -> None:
    codes = {issue(DAILY, T, slot=slot) for slot in range(100)}
    assert len(codes) == 100


def test_code_format() -> None:
    for kind in DoorcodeKind:
        code = issue(kind, T, slot=3)
        assert len(code) == 8
        assert code.isascii()
        assert code.isdigit()
        assert code[0] == str(int(kind))


# --- malformed input never raises ------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "",
        "abc",
        "1234567",
        "123456789",
        "31234567",
        "01234567",
        "91234567",
        "١٢٣٤٥٦٧٨",
        "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # fullwidth digits
        " 1234567",
        "1234567\n",
        "+1234567",
        "-1234567",
        "1_234567",
        "1234567½",
    ],
)
def test_malformed_code_returns_none(code: str) -> None:
    assert check(code, T) is None


def test_valid_code_written_in_non_ascii_digits_is_rejected() -> None:
    code = issue(DAILY, T)
    arabic_indic = code.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert int(arabic_indic) == int(code)  # Python itself would accept it
    assert check(arabic_indic, T) is None


def test_non_string_code_returns_none() -> None:
    assert check(12345678, T) is None  # type: ignore[arg-type]
    assert check(None, T) is None  # type: ignore[arg-type]


@given(code=st.text(max_size=12))
def test_check_never_raises_on_typed_text(code: str) -> None:
    result = check(code, T)
    assert result is None or code == issue(result.kind, T, slot=result.slot)


# --- the lock's own arguments are validated --------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": SECRET[:31]},
        {"secret": SECRET + b"\0"},
        {"door_id": DOOR[:15]},
        {"slot": -1},
        {"slot": 100},
        {"utc_offset_minutes": 1441},
        {"utc_offset_minutes": -1441},
        {"kind": 3},
        {"at": -1},
        {"at": 1 << 50},
    ],
)
def test_issue_rejects_invalid_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "secret": SECRET,
        "door_id": DOOR,
        "kind": DAILY,
        "at": T,
        "slot": 0,
        "utc_offset_minutes": 0,
    }
    arguments.update(kwargs)
    with pytest.raises(UsageError):
        issue_doorcode(**arguments)  # type: ignore[arg-type]


def test_check_rejects_invalid_lock_configuration() -> None:
    code = issue(DAILY, T)
    with pytest.raises(UsageError):
        check_doorcode(code, secret=SECRET[:16], door_id=DOOR, now=T)
    with pytest.raises(UsageError):
        check_doorcode(code, secret=SECRET, door_id=DOOR[:8], now=T)
    with pytest.raises(UsageError):
        check_doorcode(code, secret=SECRET, door_id=DOOR, now=T, utc_offset_minutes=2000)
    with pytest.raises(UsageError):
        check_doorcode("garbage", secret=SECRET, door_id=DOOR, now=-DAY)


def test_doorcode_window_rejects_unknown_kind() -> None:
    with pytest.raises(UsageError):
        doorcode_window(7, T, 0)  # type: ignore[arg-type]


# --- property: issue then check inside the window ----------------------------------------------


@given(
    secret=st.binary(min_size=32, max_size=32),
    door_id=st.binary(min_size=16, max_size=16),
    kind=st.sampled_from(DoorcodeKind),
    slot=st.integers(0, 99),
    offset=st.integers(-1440, 1440),
    at=st.integers(DAY, 4_000_000_000),
    elapsed=st.integers(0, DAY - 1),
)
def test_issued_code_matches_anywhere_in_its_window(
    secret: bytes,
    door_id: bytes,
    kind: DoorcodeKind,
    slot: int,
    offset: int,
    at: int,
    elapsed: int,
) -> None:
    code = issue_doorcode(
        secret=secret, door_id=door_id, kind=kind, at=at, slot=slot, utc_offset_minutes=offset
    )
    start, end = doorcode_window(kind, at, offset)
    assert start <= at < end
    now = start + elapsed % (end - start)
    match = check_doorcode(code, secret=secret, door_id=door_id, now=now, utc_offset_minutes=offset)
    assert match == DoorcodeMatch(kind=kind, slot=slot, window_start=start, window_end=end)
