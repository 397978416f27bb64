"""The lock controller's configuration: every cap, timer and policy knob in one place.

Theory of operation: the core reads nothing from the environment; an integrator
or the simulator builds a :class:`ControllerConfig` (defaults are the reference
lock's) and passes it in. Every bound the controller enforces lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import DEFAULT_LIMITS, Limits

__all__ = ["BatteryConfig", "ControllerConfig"]


@dataclass(frozen=True, kw_only=True)
class BatteryConfig:
    """A linear battery model: a capacity drained per unlock and per radio second."""

    capacity_mah: float = 2_400.0
    """Four AA lithium cells."""
    unlock_mah: float = 0.05
    """Energising the motor for one unlock."""
    radio_ma: float = 8.0
    """Current while a BLE link is up."""
    idle_ma: float = 0.0
    """Standby current (0 keeps the fast simulator's battery independent of idle time)."""


@dataclass(frozen=True, kw_only=True)
class ControllerConfig:
    """Caps, timers and policies of one lock (defaults: the reference lock)."""

    capacity: int = 10_000
    """Most credentials the store holds; a bundle beyond it is refused whole."""
    audit_capacity: int = 10_000
    """Events the audit ring holds before new events are counted as lost."""
    audit_batch_events: int = 200
    """Most events sent in one AUDIT_BATCH."""
    unlock_seconds: int = 5
    lockout_failures: int = 5
    """Failed attempts of one credential within ``lockout_window_s`` that trigger a lockout."""
    lockout_window_s: float = 60.0
    lockout_duration_s: float = 60.0
    keypad_timeout_s: float = 5.0
    """Typed digits are forgotten this long after the last key press."""
    card_response_timeout_s: float = 1.0
    """A card must answer the lock's challenge within this time."""
    max_clock_step_s: int = 300
    """Largest correction by an unbound (NO_CHALLENGE) TIME_SYNC; larger steps are clamped."""
    max_bound_clock_step_s: int = 86_400
    """Largest correction by a TIME_SYNC bound to a challenge this lock issued."""
    challenge_lifetime_s: float = 600.0
    """How long an issued HELLO challenge may bind a TIME_SYNC."""
    utc_offset_minutes: int = 0
    """Local time offset for schedules and doorcodes."""
    snapshot_every: int = 256
    """Journal transactions between two flash snapshots (compactions)."""
    verified_credentials: int = 1024
    """Mobile credentials the lock remembers as verified by the cloud key (least recently
    used first out): a cap on memory only, ~1 KB each."""
    battery: BatteryConfig = field(default_factory=BatteryConfig)
    limits: Limits = DEFAULT_LIMITS
