"""The lock's audit log: a bounded ring of gapless, sequenced events.

Theory of operation: every decision and state change becomes an
:class:`protocol.AuditEvent` with the next sequence number (starting at 1). The
ring holds at most ``capacity`` events. When it is full, new events are not
sequenced but counted as lost; as soon as an AUDIT_ACK frees space, an
EVENTS_LOST event carrying that count is logged first, so the gap is visible in
the log itself while sequence numbers stay gapless. Events leave the ring only
when a cloud-signed AUDIT_ACK covers them (:meth:`AuditLog.release`).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable

from protocol import AuditEvent, AuditEventKind

__all__ = ["AuditLog"]

_U32 = 0xFFFFFFFF


class AuditLog:
    """Bounded, gapless audit ring (sans-IO; persistence is the caller's job)."""

    def __init__(
        self, capacity: int, *, next_seq: int = 1, lost: int = 0, events: Iterable[AuditEvent] = ()
    ) -> None:
        if capacity < 2:
            raise ValueError("audit capacity must be at least 2")
        self.capacity = capacity
        self.next_seq = next_seq
        self.lost = lost
        self._events: deque[AuditEvent] = deque(events)

    @property
    def head_seq(self) -> int:
        """Sequence number of the newest event ever logged (0 if none)."""
        return self.next_seq - 1

    @property
    def pending(self) -> int:
        """Events held, not yet acknowledged by the cloud."""
        return len(self._events)

    def events(self) -> tuple[AuditEvent, ...]:
        """The held events, oldest first."""
        return tuple(self._events)

    def append(
        self,
        *,
        time: int,
        kind: AuditEventKind,
        reason: int = 0,
        credential_id: bytes = b"",
        detail: int = 0,
    ) -> AuditEvent | None:
        """Log an event; ``None`` when the ring is full and the event was counted as lost."""
        if len(self._events) >= self.capacity:
            self.lost += 1
            return None
        in_range = 0 <= time <= _U32 and 0 <= reason <= 0xFF and 0 <= detail <= _U32
        if not (in_range and len(credential_id) <= 16 and self.next_seq <= _U32):
            raise ValueError(f"audit event out of range: {kind!r} {time} {reason} {detail}")
        event = AuditEvent.unchecked(self.next_seq, time, kind, reason, credential_id, detail)
        self._events.append(event)
        self.next_seq += 1
        return event

    def restore(self, event: AuditEvent) -> None:
        """Re-insert a logged event (journal replay); sequence numbers must follow on."""
        if event.seq != self.next_seq:
            raise ValueError(f"audit replay out of order: {event.seq} after {self.next_seq - 1}")
        self._events.append(event)
        self.next_seq = event.seq + 1

    def release(self, up_to_seq: int) -> int:
        """Drop events acknowledged up to ``up_to_seq``; return how many were dropped."""
        dropped = 0
        while self._events and self._events[0].seq <= up_to_seq:
            self._events.popleft()
            dropped += 1
        return dropped

    def take_lost(self) -> int:
        """The lost count to report now (and reset), if there is room to report it."""
        if not self.lost or len(self._events) >= self.capacity:
            return 0
        lost, self.lost = self.lost, 0
        return lost

    def batch(self, max_events: int, *, after_seq: int = 0) -> tuple[AuditEvent, ...]:
        """The oldest held events above ``after_seq``, at most ``max_events`` of them."""
        start = max(0, after_seq - self._events[0].seq + 1) if self._events else 0
        return tuple(itertools.islice(self._events, start, start + max_events))
