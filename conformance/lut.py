"""The lock under test: what the conformance suite can do to a lock, and what it sees.

Theory of operation: the suite talks to one lock through :class:`LockUnderTest`, a
small, sans-IO-shaped interface: every call is one stimulus (a frame on a channel, a
BLE segment, a card tap, a card answer, key presses, time passing, a power cut) and
returns the lock's observable :class:`Outputs` (frames it sent, segment acks, card
challenges, door releases). :meth:`LockUnderTest.observe` reads the state an
integrator can report from the firmware (list version and digest, key epoch, audit
head, lock time). Adapters implement it: :mod:`conformance.inprocess` around the
reference controller, :mod:`conformance.process` around any program speaking the
JSON-lines protocol of ``docs/conformance.md``, :mod:`conformance.ble` over the
reference lock's BLE face through the bleak API, :mod:`conformance.mqtt` over its MQTT
face through a broker.

The suite holds the cloud's keys. It provisions the lock with
:meth:`LockUnderTest.provision` (the documented provisioning step: the lock is given
the cloud's public key, its door id, property id and doorcode secret, and answers with
its :class:`Registration`: public keys and its declared policies). Provisioning is a
factory reset: every requirement starts from a freshly provisioned lock.

Optional abilities (segment delivery, power cuts at a flash write) are announced in
:attr:`Registration.capabilities`; a check that needs a missing one is skipped, not
failed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CAPABILITIES",
    "AdapterError",
    "Channel",
    "LockUnderTest",
    "Observed",
    "Outputs",
    "ProvisionRequest",
    "Registration",
    "SentFrame",
]

Capability = Literal["segments", "power_cut_at_write", "keypad", "cards"]
CAPABILITIES: tuple[Capability, ...] = ("segments", "power_cut_at_write", "keypad", "cards")
"""What an adapter may announce beyond frames, observation, clock and restart."""


class AdapterError(Exception):
    """The adapter or the lock behind it failed (crashed, hung, answered nonsense).

    This is never a verdict on a requirement by itself: the runner reports it as an
    ERROR of the check that was running, with this message.
    """


@dataclass(frozen=True, order=True)
class Channel:
    """Where a frame comes from and where the answer goes (``mqtt`` or ``ble:N``)."""

    transport: Literal["mqtt", "ble"]
    number: int = 0

    def __str__(self) -> str:
        return "mqtt" if self.transport == "mqtt" else f"ble:{self.number}"

    @classmethod
    def parse(cls, text: str) -> Channel:
        """``"mqtt"`` or ``"ble:N"``; raise ``ValueError`` otherwise."""
        if text == "mqtt":
            return cls("mqtt")
        transport, _, number = text.partition(":")
        if transport != "ble" or not number.isdigit():
            raise ValueError(f"not a channel: {text!r} (use 'mqtt' or 'ble:N')")
        return cls("ble", int(number))


MQTT = Channel("mqtt")


@dataclass(frozen=True)
class SentFrame:
    """One frame the lock sent on ``channel``."""

    channel: Channel
    frame: bytes


@dataclass
class Outputs:
    """What the lock visibly did in answer to one stimulus, in order."""

    frames: list[SentFrame] = field(default_factory=list)
    acks: list[bytes] = field(default_factory=list)
    """BLE segment acks (§7.1.2) the lock notified."""
    challenges: list[tuple[bytes, bytes]] = field(default_factory=list)
    """``(uid, challenge)`` asked of a card in the field (§7.3)."""
    energised: list[int] = field(default_factory=list)
    """Door releases, in seconds."""
    power_lost: bool = False
    """An armed power cut struck during this stimulus; the lock is off until restart."""

    def __add__(self, other: Outputs) -> Outputs:
        return Outputs(
            [*self.frames, *other.frames],
            [*self.acks, *other.acks],
            [*self.challenges, *other.challenges],
            [*self.energised, *other.energised],
            self.power_lost or other.power_lost,
        )


@dataclass(frozen=True, kw_only=True)
class ProvisionRequest:
    """The provisioning step (see ``docs/conformance.md``), as the suite performs it."""

    cloud_public_key: bytes
    door_id: bytes
    property_id: bytes
    doorcode_secret: bytes
    lock_time: int
    """The lock's clock at provisioning (unix seconds)."""
    capacity: int = 64
    """Requested credential capacity; a lock that cannot change it reports its own."""
    utc_offset_minutes: int = 0


@dataclass(frozen=True, kw_only=True)
class LockoutPolicy:
    """A lock's declared failure lock-out (controller policy, not §-normative): after
    ``failures`` failed attempts of one credential within ``window_s`` seconds, it refuses
    that credential with LOCKED_OUT for ``duration_s`` seconds."""

    failures: int
    window_s: int
    duration_s: int


@dataclass(frozen=True, kw_only=True)
class Registration:
    """What the lock answers to provisioning: the cloud's view of the door."""

    door_id: bytes
    identity_public: bytes
    """Ed25519: verifies RECEIPT and AUDIT_BATCH."""
    sealing_public: bytes
    """X25519: bundles are sealed to it."""
    capacity: int
    max_clock_step_s: int
    """Largest correction by an unbound TIME_SYNC (the lock's declared policy, §6.6)."""
    capabilities: frozenset[str] = frozenset()
    lockout: LockoutPolicy | None = None
    """The lock's failure lock-out, if it declares one (None: LOCKED_OUT is not judged)."""


@dataclass(frozen=True, kw_only=True)
class Observed:
    """State an integrator's firmware reports (also visible in HELLO, §4.1)."""

    list_version: int
    list_digest: bytes
    key_epoch: int
    audit_head_seq: int
    lock_time: int


class LockUnderTest(ABC):
    """One lock, driven stimulus by stimulus. Every method may raise :class:`AdapterError`."""

    @abstractmethod
    def provision(self, request: ProvisionRequest) -> Registration:
        """Factory-reset the lock and provision it; the clock reads ``request.lock_time``."""

    @abstractmethod
    def connect(self, channel: Channel) -> Outputs:
        """A phone connected (``ble:N``) or the MQTT session came up (``mqtt``)."""

    @abstractmethod
    def disconnect(self, channel: Channel) -> Outputs:
        """The link of ``channel`` dropped."""

    @abstractmethod
    def deliver(self, channel: Channel, frame: bytes) -> Outputs:
        """One whole frame (or any bytes) arrives on ``channel``."""

    def deliver_segment(self, channel: Channel, segment: bytes) -> Outputs:
        """One BLE write to ``rx`` (§7.1.1); needs the ``segments`` capability."""
        raise AdapterError("this adapter cannot deliver BLE segments")

    def tap_card(self, uid: bytes) -> Outputs:
        """A card with ``uid`` enters the reader field; needs ``cards``."""
        raise AdapterError("this adapter has no card reader")

    def answer_card(self, uid: bytes, response: bytes) -> Outputs:
        """The card in the field answers the lock's challenge; needs ``cards``."""
        raise AdapterError("this adapter has no card reader")

    def press_keys(self, keys: str) -> Outputs:
        """Keys typed on the keypad, one after the other; needs ``keypad``."""
        raise AdapterError("this adapter has no keypad")

    @abstractmethod
    def advance(self, seconds: float) -> Outputs:
        """Let ``seconds`` pass on the lock's own clock, running its timers."""

    @abstractmethod
    def observe(self) -> Observed:
        """Read the lock's observable state."""

    @abstractmethod
    def power_cut(self) -> None:
        """Cut the power now, between stimuli (the lock is off until :meth:`restart`)."""

    def arm_power_cut(self, at_write: int, landed: float = 0.5) -> None:
        """Cut the power during the ``at_write``-th flash write (1-based) from now on, after
        the fraction ``landed`` (0.0 to 1.0) of that write reached the flash; needs
        ``power_cut_at_write``."""
        raise AdapterError("this adapter cannot cut the power at a flash write")

    @abstractmethod
    def restart(self) -> Outputs:
        """Power on again and boot from flash."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the adapter (end a process, close a link)."""
