"""The pieces a scenario run keeps per lock, phone and fault, and its pending-door series.

Theory of operation: these are plain records the runner (:mod:`.scenario_run`) mutates as
virtual time passes. :class:`LockClock` is a lock's clock reading: virtual time plus the
steps it took and the drift it accumulated (``ppm``), so a drifting lock decides, logs and
reports HELLO times by its own clock, as a real one does. :class:`SimDoor` is a door: its
lock (``None`` while the power is off; the flash medium survives), its MQTT links and what
it received. :class:`SimPhone` is a person's phone: mobile credential, bundle cache, the
uploads queued while it cannot reach the cloud, and a bundle transfer cut by a dropped BLE
link, to resume. :class:`FaultLog` collects what one fault did, for its report sentence.
:class:`PendingDoors` keeps the doors with unsynced updates and the series of their count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.service import CloudService
from controller.events import AccessDecided, Action
from controller.runtime import LockRuntime
from controller.storage import Medium
from protocol import MobileCredential, Reason

from .clock import Scheduler
from .net import MqttLink
from .scenario_setup import CardSpec, DoorSpec

__all__ = [
    "FaultLog",
    "LockClock",
    "PendingDoors",
    "SimDoor",
    "SimPerson",
    "SimPhone",
    "Upload",
    "decision_of",
]


@dataclass
class LockClock:
    """A lock's clock reading: virtual time, plus steps, plus drift at ``ppm``."""

    scheduler: Scheduler
    step_s: float = 0.0
    ppm: float = 0.0
    since: float = 0.0
    drifted_s: float = 0.0

    def __call__(self) -> float:
        now = self.scheduler.now
        if not self.ppm:
            return now + self.step_s + self.drifted_s
        return now + self.step_s + self.drifted_s + self.ppm * 1e-6 * (now - self.since)

    def error_s(self) -> float:
        """How far the reading is from virtual time (before any time sync corrects it)."""
        return self() - self.scheduler.now

    def drift(self, ppm: float, step_s: float) -> None:
        """From now on run at ``ppm`` (0 keeps the present rate) and jump by ``step_s``."""
        now = self.scheduler.now
        self.drifted_s += self.ppm * 1e-6 * (now - self.since)
        self.since = now
        if ppm:
            self.ppm = ppm
        self.step_s += step_s


@dataclass
class SimDoor:
    """A door: its spec, its lock (None while unpowered) and flash, links and counters."""

    spec: DoorSpec
    lock: LockRuntime | None
    medium: Medium
    clock: LockClock
    down: MqttLink | None = None
    up: MqttLink | None = None
    flushed_at: float = -1.0e9
    boots: int = 0
    bundle_bytes: int = 0
    airtime_s: float = 0.0
    cut_armed: FaultLog | None = None
    """A ``power_cut`` with ``during_update`` waiting for the lock's next update."""
    link_loss: FaultLog | None = None
    link_loss_until: float = -1.0
    audit_made: int = 0
    """Audit events this lock has made (its ``next_seq - 1``), kept while it is off."""


@dataclass
class Upload:
    """What one visit gave the phone to upload: the door and the lock's frames."""

    door: int
    frames: list[bytes]


@dataclass
class SimPhone:
    """A person's phone (see the module docstring)."""

    key: Ed25519PrivateKey
    public: bytes
    credential: MobileCredential | None = None
    bundles: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    """Door id → (target version, bundle frame)."""
    prefetched_at: float | None = None
    acks: dict[str, bytes] = field(default_factory=dict)
    """Door id → the AUDIT_ACK frame to deliver at the next visit there."""
    offline_until: float = -1.0
    outbox: list[Upload] = field(default_factory=list)
    flush_due: bool = False
    partial: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Door id → (bundle target, bytes already written) of a transfer a dropped link cut."""
    offline_log: FaultLog | None = None


@dataclass
class SimPerson:
    """A person: the card they tap (their first, or its replacement), their phone."""

    index: int
    name: str
    id: str
    card: CardSpec | None
    phone: SimPhone | None


@dataclass
class FaultLog:
    """What one fault did: counters and notes, turned into one sentence at the end."""

    at_s: float
    kind: str
    target: str
    counts: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    ended_at: float | None = None

    def add(self, what: str, amount: float = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + amount

    def count(self, what: str) -> int:
        return int(self.counts.get(what, 0))


@dataclass
class PendingDoors:
    """Doors with at least one tracked update the cloud has no receipt for yet."""

    unsynced: dict[int, list[int]] = field(default_factory=dict)
    series: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])
    """(time, doors pending) from time zero on, at every change of the count."""

    def add(self, door: int, version: int, now: float) -> None:
        self.unsynced.setdefault(door, []).append(version)
        self._note(now)

    def synced(self, door: int, version: int, now: float) -> None:
        waiting = self.unsynced.get(door)
        if not waiting:
            return
        left = [v for v in waiting if v > version]
        if left:
            self.unsynced[door] = left
        else:
            del self.unsynced[door]
        self._note(now)

    def _note(self, now: float) -> None:
        count = len(self.unsynced)
        if self.series[-1][0] == now:
            self.series[-1] = (now, count)  # one point per instant: the count after it
            if len(self.series) > 1 and self.series[-2][1] == count:
                self.series.pop()
        elif self.series[-1][1] != count:
            self.series.append((now, count))


def decision_of(actions: list[Action]) -> Reason | None:
    """The reason of the access decision among a lock's actions (None: it made none)."""
    for action in actions:
        if type(action) is AccessDecided:  # final: no action class has subclasses
            return action.reason
    return None


def synced_version(cloud: CloudService, door_id: str) -> int:
    """The version the cloud holds a receipt for, read in ``cloud``'s transaction."""
    with cloud.statements(writes=False) as sql:
        row = sql.row("SELECT synced_version FROM door WHERE id = ?", [door_id])
    assert row is not None, f"no door {door_id!r} in the scenario's cloud"
    return int(row[0])
