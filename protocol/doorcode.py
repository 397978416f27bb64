"""Offline keypad doorcodes: codes a lock checks with no entry in its credential list.

Theory of operation: the cloud and the lock share a per-door 32-byte ``secret``.
Both derive the code for a time window from that secret, the 16-byte door id and
the window's index, so a lock without any network connection can check a code
typed on its keypad (as daily doorcodes work on doors without internet).

A code is 8 ASCII decimal digits::

    K SS MMMMM
    K      kind: 1 = DAILY, 2 = QUARTER_HOUR
    SS     slot 00-99: the cloud gives different people different codes for one window
    MMMMM  MAC digits

The MAC digits are the HOTP dynamic truncation (RFC 4226 §5.3) of::

    HMAC-SHA256(secret, b"LK1-CODE" || kind (1 byte) || door_id || window (u32 BE) || slot)

taken modulo 10^5 and zero-padded to five digits.

Windows are counted in local time, ``local = unix_time + utc_offset_minutes * 60``:

* DAILY: window = ``local // 86400`` (the local calendar day).
* QUARTER_HOUR: window = ``local // 900``.

Validity rule: a DAILY code is accepted during its own local day only. A
QUARTER_HOUR code issued for window *w* is accepted during windows *w* and *w + 1*,
so a guest who receives it has at least 15 and at most 30 minutes to use it. No
code is accepted before its window starts.

This module is pure: the time is an argument; nothing reads a clock. Checking never
raises on what a person typed: a malformed or wrong code is simply ``None``.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from .errors import UsageError

__all__ = [
    "DOORCODE_DIGITS",
    "DOORCODE_DOOR_ID_SIZE",
    "DOORCODE_MAX_SLOT",
    "DOORCODE_MAX_UTC_OFFSET_MINUTES",
    "DOORCODE_SECRET_SIZE",
    "DoorcodeKind",
    "DoorcodeMatch",
    "check_doorcode",
    "doorcode_window",
    "issue_doorcode",
]

DOORCODE_DIGITS = 8
"""Digits in a code: kind (1) + slot (2) + MAC (5)."""
DOORCODE_SECRET_SIZE = 32
"""Bytes in the per-door doorcode secret."""
DOORCODE_DOOR_ID_SIZE = 16
"""Bytes in a door id."""
DOORCODE_MAX_SLOT = 99
"""Highest slot number (two decimal digits)."""
DOORCODE_MAX_UTC_OFFSET_MINUTES = 1440
"""Largest absolute UTC offset accepted, in minutes."""

_LABEL = b"LK1-CODE"
_MAC_DIGITS = 5
_MAX_WINDOW = 0xFFFF_FFFF
_ASCII_DIGITS = frozenset("0123456789")


class DoorcodeKind(IntEnum):
    """The kind of a doorcode; its value is the code's first digit."""

    DAILY = 1
    """Valid for one local calendar day."""
    QUARTER_HOUR = 2
    """The "15-minute" guest code: valid in its quarter hour and the next."""


_WINDOW_SECONDS: dict[DoorcodeKind, int] = {
    DoorcodeKind.DAILY: 86_400,
    DoorcodeKind.QUARTER_HOUR: 900,
}
_GRACE_WINDOWS: dict[DoorcodeKind, int] = {
    DoorcodeKind.DAILY: 0,
    DoorcodeKind.QUARTER_HOUR: 1,
}


@dataclass(frozen=True, kw_only=True)
class DoorcodeMatch:
    """A code that checked out: what it is and the window it was issued for."""

    kind: DoorcodeKind
    slot: int
    window_start: int
    """First second (unix time) of the window the code was issued for."""
    window_end: int
    """End (exclusive, unix time) of the window the code was issued for."""

    @property
    def valid_until(self) -> int:
        """End (exclusive, unix time) of the period in which the lock accepts the code."""
        length = _WINDOW_SECONDS[self.kind]
        return self.window_end + _GRACE_WINDOWS[self.kind] * length


# --- validation ----------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{name} must be an integer in [{low}, {high}]")
    return value


def _check_bytes(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != size:
        raise UsageError(f"{name} must be {size} bytes")
    return bytes(value)


def _check_kind(kind: int) -> DoorcodeKind:
    try:
        return DoorcodeKind(kind)
    except (TypeError, ValueError):
        raise UsageError(f"unknown doorcode kind {kind!r}") from None


def _check_offset(utc_offset_minutes: int) -> int:
    limit = DOORCODE_MAX_UTC_OFFSET_MINUTES
    return _check_int("utc_offset_minutes", utc_offset_minutes, -limit, limit)


# --- windows and MAC -----------------------------------------------------------------------


def _window_index(kind: DoorcodeKind, at: int, utc_offset_minutes: int) -> int:
    if isinstance(at, bool) or not isinstance(at, int):
        raise UsageError("a time must be an integer of unix seconds")
    index = (at + utc_offset_minutes * 60) // _WINDOW_SECONDS[kind]
    if not 0 <= index <= _MAX_WINDOW:
        raise UsageError(f"time {at} is outside the range doorcodes can express")
    return index


def _window_bounds(kind: DoorcodeKind, index: int, utc_offset_minutes: int) -> tuple[int, int]:
    length = _WINDOW_SECONDS[kind]
    start = index * length - utc_offset_minutes * 60
    return start, start + length


def _mac_digits(secret: bytes, door_id: bytes, kind: DoorcodeKind, index: int, slot: int) -> str:
    """HMAC-SHA256 then RFC 4226 §5.3 dynamic truncation to five decimal digits."""
    mac = crypto_hmac.HMAC(secret, hashes.SHA256())
    mac.update(_LABEL + bytes([kind]) + door_id + struct.pack(">IB", index, slot))
    digest = mac.finalize()
    offset = digest[-1] & 0x0F
    binary = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFF_FFFF
    return f"{binary % 10**_MAC_DIGITS:0{_MAC_DIGITS}d}"


def _format(secret: bytes, door_id: bytes, kind: DoorcodeKind, index: int, slot: int) -> str:
    return f"{int(kind)}{slot:02d}{_mac_digits(secret, door_id, kind, index, slot)}"


# --- public API ----------------------------------------------------------------------------


def doorcode_window(kind: DoorcodeKind, at: int, utc_offset_minutes: int = 0) -> tuple[int, int]:
    """Return ``(start, end)`` in unix seconds (end exclusive) of the ``kind`` window at ``at``.

    Raises:
        UsageError: unknown kind, offset outside ±1440 minutes, or a time whose window
            index does not fit in 32 bits (before 1970 in local time).
    """
    kind = _check_kind(kind)
    offset = _check_offset(utc_offset_minutes)
    return _window_bounds(kind, _window_index(kind, at, offset), offset)


def issue_doorcode(
    *,
    secret: bytes,
    door_id: bytes,
    kind: DoorcodeKind,
    at: int,
    slot: int = 0,
    utc_offset_minutes: int = 0,
) -> str:
    """Return the 8-digit code of ``kind`` and ``slot`` for the window containing ``at``.

    Raises:
        UsageError: secret not 32 bytes, door id not 16 bytes, unknown kind, slot
            outside 0-99, offset outside ±1440 minutes, or an unrepresentable time.
    """
    secret = _check_bytes("secret", secret, DOORCODE_SECRET_SIZE)
    door_id = _check_bytes("door_id", door_id, DOORCODE_DOOR_ID_SIZE)
    kind = _check_kind(kind)
    slot = _check_int("slot", slot, 0, DOORCODE_MAX_SLOT)
    offset = _check_offset(utc_offset_minutes)
    return _format(secret, door_id, kind, _window_index(kind, at, offset), slot)


def _parse(code: object) -> tuple[DoorcodeKind, int] | None:
    """Split a typed code into kind and slot, or ``None`` if it is not well-formed."""
    if not isinstance(code, str) or len(code) != DOORCODE_DIGITS:
        return None
    if not set(code) <= _ASCII_DIGITS:  # str.isdigit() would admit non-ASCII digits
        return None
    try:
        kind = DoorcodeKind(int(code[0]))
    except ValueError:
        return None
    return kind, int(code[1:3])


def _match_window(
    code: str, secret: bytes, door_id: bytes, kind: DoorcodeKind, current: int, slot: int
) -> int | None:
    """Return the newest window in which ``code`` is accepted at window ``current``.

    Compares every candidate window in constant time, whichever matched first.
    """
    oldest = max(current - _GRACE_WINDOWS[kind], 0)
    matched: int | None = None
    for index in range(current, oldest - 1, -1):
        expected = _format(secret, door_id, kind, index, slot)
        if hmac.compare_digest(expected.encode("ascii"), code.encode("ascii")):
            matched = index if matched is None else matched
    return matched


def check_doorcode(
    code: str,
    *,
    secret: bytes,
    door_id: bytes,
    now: int,
    utc_offset_minutes: int = 0,
) -> DoorcodeMatch | None:
    """Return what ``code`` is if the lock must accept it at ``now``, else ``None``.

    Applies the validity rule of the module docstring. Never raises on ``code``:
    anything malformed (wrong length, non-ASCII-digits, unknown kind) is ``None``.

    Raises:
        UsageError: the lock's own ``secret``, ``door_id``, ``now`` or offset is invalid.
    """
    secret = _check_bytes("secret", secret, DOORCODE_SECRET_SIZE)
    door_id = _check_bytes("door_id", door_id, DOORCODE_DOOR_ID_SIZE)
    offset = _check_offset(utc_offset_minutes)
    current = {kind: _window_index(kind, now, offset) for kind in DoorcodeKind}
    parsed = _parse(code)
    if parsed is None:
        return None
    kind, slot = parsed
    matched = _match_window(code, secret, door_id, kind, current[kind], slot)
    if matched is None:
        return None
    start, end = _window_bounds(kind, matched, offset)
    return DoorcodeMatch(kind=kind, slot=slot, window_start=start, window_end=end)
