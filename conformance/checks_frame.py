"""Requirements on the frame envelope (``docs/protocol.md`` §2.3, §9).

Theory of operation: every check takes a valid BUNDLE frame that would move the lock
to version 1, breaks exactly one field of the envelope (recomputing the CRC where the
field under test is not the CRC), delivers it, and requires the ERROR code §2.3 gives
for that step and an unchanged lock. Using a bundle as the carrier means a lock that
*accepted* a broken frame is caught by its state, not only by a missing ERROR.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

from protocol import ErrorCode

from .registry import requirement
from .session import Session

MAX_FRAME_PAYLOAD = 1 << 20


def _carrier(s: Session) -> bytes:
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    return s.cloud.bundle(0)


def _recrc(frame: bytes) -> bytes:
    body = frame[:-4]
    return body + zlib.crc32(body).to_bytes(4, "big")


def _refuse(s: Session, mutate: Callable[[bytes], bytes], code: ErrorCode, what: str) -> str:
    frame = mutate(_carrier(s))
    s.expect_refused(frame, code, what)
    return f"ERROR {code.name}, state unchanged"


@requirement(section="§2.3 step 1", tags=("frame", "decode", "malformed"))
def frame_truncated_is_malformed(s: Session) -> str:
    """A frame shorter than 12 bytes is refused with MALFORMED and changes nothing."""
    return _refuse(s, lambda f: f[:11], ErrorCode.MALFORMED, "11-byte frame")


@requirement(section="§2.3 step 2", tags=("frame", "decode", "malformed"))
def frame_bad_magic_is_malformed(s: Session) -> str:
    """A frame whose magic is not "LK" is refused with MALFORMED."""
    return _refuse(s, lambda f: _recrc(b"LX" + f[2:]), ErrorCode.MALFORMED, "bad magic")


@requirement(section="§2.3 step 3", tags=("frame", "decode", "downgrade", "security"))
def frame_unsupported_version_is_refused(s: Session) -> str:
    """A frame of a protocol version the lock does not speak is refused (no fallback)."""
    results = []
    for version in (0, 2, 0xFF):
        mutated = _carrier(s)
        frame = _recrc(mutated[:2] + bytes([version]) + mutated[3:])
        s.expect_refused(frame, ErrorCode.UNSUPPORTED_VERSION, f"version {version} frame")
        results.append(str(version))
    return f"versions {', '.join(results)}: ERROR UNSUPPORTED_VERSION"


@requirement(section="§2.3 step 4, §8", tags=("frame", "decode", "bounds", "security"))
def frame_oversized_length_is_too_large(s: Session) -> str:
    """A length field above max_frame_payload is refused with TOO_LARGE before reading on."""

    def mutate(f: bytes) -> bytes:
        return _recrc(f[:4] + (MAX_FRAME_PAYLOAD + 1).to_bytes(4, "big") + f[8:])

    return _refuse(s, mutate, ErrorCode.TOO_LARGE, "length above the limit")


@requirement(section="§2.3 step 5", tags=("frame", "decode", "malformed"))
def frame_short_of_its_length_is_malformed(s: Session) -> str:
    """A frame shorter than its length field says is refused with MALFORMED."""

    def mutate(f: bytes) -> bytes:
        length = int.from_bytes(f[4:8], "big") + 10
        return _recrc(f[:4] + length.to_bytes(4, "big") + f[8:])

    return _refuse(s, mutate, ErrorCode.MALFORMED, "length field too big")


@requirement(section="§2.3 step 6", tags=("frame", "decode", "malformed"))
def frame_trailing_bytes_are_malformed(s: Session) -> str:
    """A frame longer than its length field says is refused with MALFORMED."""
    return _refuse(s, lambda f: f + b"\x00", ErrorCode.MALFORMED, "one trailing byte")


@requirement(section="§2.3 step 7", tags=("frame", "decode", "malformed", "crc"))
def frame_bad_checksum_is_malformed(s: Session) -> str:
    """A frame whose CRC-32 does not match is refused with MALFORMED and not acted on."""

    def mutate(f: bytes) -> bytes:
        return f[:-1] + bytes([f[-1] ^ 0x01])

    return _refuse(s, mutate, ErrorCode.MALFORMED, "CRC off by one bit")


@requirement(section="§2.3 step 8", tags=("frame", "decode", "malformed"))
def frame_unknown_type_is_malformed(s: Session) -> str:
    """A frame of an unknown message type (good CRC) is refused with MALFORMED."""
    for kind in (0x00, 0x0B, 0xFF):
        mutated = _carrier(s)
        frame = _recrc(mutated[:3] + bytes([kind]) + mutated[4:])
        s.expect_refused(frame, ErrorCode.MALFORMED, f"type 0x{kind:02x}")
    return "types 0x00, 0x0b, 0xff: ERROR MALFORMED"


@requirement(section="§2.3, §9 taxonomy", tags=("frame", "decode", "robustness", "security"))
def hostile_bytes_change_nothing(s: Session) -> str:
    """Hostile bytes (random, bit-flipped, truncated frames) never crash or change the lock."""
    valid = _carrier(s)
    before = s.observe()
    blobs = [hashlib.sha256(f"hostile {n}".encode()).digest() * (n % 5 + 1) for n in range(40)]
    for n in range(0, len(valid), 7):
        flipped = bytearray(valid)
        flipped[n] ^= 0x80
        blobs += [bytes(flipped), _recrc(bytes(flipped)), valid[:n]]
    for n, blob in enumerate(blobs):
        if blob == valid:
            continue
        s.deliver(blob)
        s.expect_unchanged(before, f"hostile input #{n} ({blob[:12].hex()}…)")
    s.expect_applied(valid, "the valid frame after the hostile ones")
    return f"{len(blobs)} hostile inputs refused; the valid frame still applies"
