"""Events into the controller core and actions out of it.

Theory of operation: the core is a function of (state, event, now) → (state,
actions). Adapters turn radio packets, MQTT messages, card readers and keypads
into these events and carry out the actions in order: an action list that holds a
:class:`PersistTransaction` must have it written to flash before any later action
(a receipt must never leave before the change it reports is durable).

A *channel* names where a frame came from and where the answer goes: a BLE
connection (``Channel("ble", n)``) or the door's MQTT session (``MQTT``).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import Reason

__all__ = [
    "MQTT",
    "AccessDecided",
    "Action",
    "CardAnswered",
    "CardChallenge",
    "CardTapped",
    "Channel",
    "Connected",
    "Disconnected",
    "Energise",
    "Event",
    "FrameReceived",
    "KeyPressed",
    "PersistSnapshot",
    "PersistTransaction",
    "Send",
]


@dataclass(frozen=True)
class Channel:
    """Where frames come from and answers go: ``("ble", connection)`` or ``("mqtt", 0)``."""

    transport: str
    number: int = 0


MQTT = Channel("mqtt")


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CardTapped:
    """A card entered the reader's field and told its UID."""

    uid: bytes


@dataclass(frozen=True)
class CardAnswered:
    """The card's response to the lock's :class:`CardChallenge`."""

    uid: bytes
    response: bytes


@dataclass(frozen=True)
class KeyPressed:
    """One keypad key, ``"0"`` … ``"9"``."""

    key: str


@dataclass(frozen=True)
class Connected:
    """A phone connected over BLE, or the door's MQTT session came up."""

    channel: Channel


@dataclass(frozen=True)
class Disconnected:
    channel: Channel


@dataclass(frozen=True)
class FrameReceived:
    """One complete frame (already reassembled from BLE segments)."""

    channel: Channel
    data: bytes


Event = CardTapped | CardAnswered | KeyPressed | Connected | Disconnected | FrameReceived


# --- actions: slotted, not frozen (built on the hot path); treat them as immutable ---


@dataclass(slots=True)
class Energise:
    """Release the door for ``seconds``."""

    seconds: int


@dataclass(slots=True)
class Send:
    """Send one frame on ``channel`` (MQTT: publish on the topic of its message type)."""

    channel: Channel
    frame: bytes
    retain: bool = False


@dataclass(slots=True)
class CardChallenge:
    """Ask the card in the field to answer ``challenge``."""

    uid: bytes
    challenge: bytes


@dataclass(slots=True)
class PersistTransaction:
    """Append this journal transaction to flash, before any later action."""

    data: bytes


@dataclass(slots=True)
class PersistSnapshot:
    """Write this snapshot (compaction), before any later action."""

    data: bytes


@dataclass(slots=True)
class AccessDecided:
    """Informational: an access decision was made (also in the audit log)."""

    method: str
    credential_id: bytes
    reason: Reason
    lock_time: int


Action = Energise | Send | CardChallenge | PersistTransaction | PersistSnapshot | AccessDecided
