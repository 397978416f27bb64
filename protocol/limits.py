"""Bounds on every size and count the protocol accepts (``docs/protocol.md`` §8).

Theory of operation: nothing read from the air is unbounded. Decoders take a
:class:`Limits` (default :data:`DEFAULT_LIMITS`) and raise
:class:`protocol.errors.TooLargeError` before allocating for anything above a cap.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Caps applied by decoders. All are inclusive maxima."""

    max_frame_payload: int = 1 << 20
    """Largest frame payload in bytes (a bundle provisioning ~20,000 cards fits)."""
    max_list_entries: int = 100_000
    """Most entries a credential list or delta may carry (a lock's own capacity is lower)."""
    max_audit_events: int = 1_000
    """Most events in one AUDIT_BATCH."""
    max_scope_doors: int = 64
    """Most door ids a mobile credential may name."""
    max_error_detail: int = 200
    """Longest ERROR detail text, in UTF-8 bytes."""
    max_segments: int = 8_192
    """Most BLE segments in one transfer."""


DEFAULT_LIMITS = Limits()
