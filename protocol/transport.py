"""Transport constants: the BLE GATT profile and the MQTT topic layout
(``docs/protocol.md`` §7 and §10).

Theory of operation: both transports carry the same frames. Over BLE a frame is
split into segments (:mod:`protocol.segmentation`) written to ``RX`` by the phone
and notified on ``TX`` by the lock; segment acknowledgements travel on ``ACK``.
Over MQTT every message is one frame on a per-door topic under :data:`TOPIC_PREFIX`.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADVERTISING_COMPANY_ID",
    "CHAR_ACK_UUID",
    "CHAR_INFO_UUID",
    "CHAR_RX_UUID",
    "CHAR_TX_UUID",
    "KEY_ROTATION_TOPIC",
    "SERVICE_UUID",
    "TOPIC_PREFIX",
    "door_topic",
]

SERVICE_UUID: Final = "6c6b0001-7a1e-4c8a-9d3e-5c0a11d0c0de"
CHAR_RX_UUID: Final = "6c6b0002-7a1e-4c8a-9d3e-5c0a11d0c0de"
"""Phone → lock segments (write without response)."""
CHAR_TX_UUID: Final = "6c6b0003-7a1e-4c8a-9d3e-5c0a11d0c0de"
"""Lock → phone segments (notify)."""
CHAR_ACK_UUID: Final = "6c6b0004-7a1e-4c8a-9d3e-5c0a11d0c0de"
"""Segment acknowledgements, both directions (write + notify)."""
CHAR_INFO_UUID: Final = "6c6b0005-7a1e-4c8a-9d3e-5c0a11d0c0de"
"""Read: the 16-byte door id."""
ADVERTISING_COMPANY_ID: Final = 0xFFFF
"""Manufacturer-data company id (the Bluetooth SIG test id) carrying the door id."""

TOPIC_PREFIX: Final = "latchsim/v1/"
KEY_ROTATION_TOPIC: Final = TOPIC_PREFIX + "cloud/keyrotation"
_DOOR_LEAVES = frozenset({"bundle", "receipt", "audit", "ack", "time", "hello", "error", "status"})


def door_topic(door_id: bytes, leaf: str) -> str:
    """The MQTT topic ``latchsim/v1/doors/{door_id_hex}/{leaf}``."""
    if leaf not in _DOOR_LEAVES:
        raise ValueError(f"unknown door topic {leaf!r}; expected one of {sorted(_DOOR_LEAVES)}")
    return f"{TOPIC_PREFIX}doors/{door_id.hex()}/{leaf}"
