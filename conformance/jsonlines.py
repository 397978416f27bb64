"""The adapter-process protocol: JSON lines on stdin/stdout (``docs/conformance.md``).

Theory of operation: one request per line from the suite, one reply per line from the
adapter, strictly in turn. Every request is an object with ``id`` (echoed in the reply)
and ``op`` (a :class:`~conformance.lut.LockUnderTest` method name); bytes travel as
lowercase hex, channels as ``"mqtt"`` or ``"ble:N"``. A reply is ``{"id", "ok": true,
...}`` with the op's result, or ``{"id", "ok": false, "error": "..."}``. This module
holds only the encoding of the interface's values, shared by the suite's client
(:mod:`conformance.process`) and the server half (:mod:`conformance.serve`), so both
ends agree by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .lut import (
    Channel,
    LockoutPolicy,
    Observed,
    Outputs,
    ProvisionRequest,
    Registration,
    SentFrame,
)

__all__ = [
    "OPS",
    "ProtocolViolation",
    "hex_field",
    "observed_from",
    "observed_to",
    "outputs_from",
    "outputs_to",
    "provision_from",
    "provision_to",
    "registration_from",
    "registration_to",
]

OPS = (
    "provision",
    "connect",
    "disconnect",
    "deliver",
    "deliver_segment",
    "tap_card",
    "answer_card",
    "press_keys",
    "advance",
    "observe",
    "power_cut",
    "arm_power_cut",
    "restart",
    "bye",
)


class ProtocolViolation(ValueError):
    """A message of the adapter protocol is malformed (names the field)."""


def hex_field(message: dict[str, Any], name: str) -> bytes:
    value = message.get(name)
    if not isinstance(value, str):
        raise ProtocolViolation(f"field {name!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProtocolViolation(f"field {name!r} is not hexadecimal: {value[:40]!r}") from None


def int_field(message: dict[str, Any], name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolViolation(f"field {name!r} must be an integer")
    return value


def number_field(message: dict[str, Any], name: str) -> float:
    value = message.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProtocolViolation(f"field {name!r} must be a number")
    return float(value)


def channel_field(message: dict[str, Any], name: str = "channel") -> Channel:
    value = message.get(name)
    if not isinstance(value, str):
        raise ProtocolViolation(f"field {name!r} must be 'mqtt' or 'ble:N'")
    try:
        return Channel.parse(value)
    except ValueError as exc:
        raise ProtocolViolation(str(exc)) from None


def provision_to(request: ProvisionRequest) -> dict[str, Any]:
    return {
        "cloud_public_key": request.cloud_public_key.hex(),
        "door_id": request.door_id.hex(),
        "property_id": request.property_id.hex(),
        "doorcode_secret": request.doorcode_secret.hex(),
        "lock_time": request.lock_time,
        "capacity": request.capacity,
        "utc_offset_minutes": request.utc_offset_minutes,
    }


def provision_from(m: dict[str, Any]) -> ProvisionRequest:
    return ProvisionRequest(
        cloud_public_key=hex_field(m, "cloud_public_key"),
        door_id=hex_field(m, "door_id"),
        property_id=hex_field(m, "property_id"),
        doorcode_secret=hex_field(m, "doorcode_secret"),
        lock_time=int_field(m, "lock_time"),
        capacity=int_field(m, "capacity"),
        utc_offset_minutes=int_field(m, "utc_offset_minutes"),
    )


def registration_to(reg: Registration) -> dict[str, Any]:
    return {
        "door_id": reg.door_id.hex(),
        "identity_public": reg.identity_public.hex(),
        "sealing_public": reg.sealing_public.hex(),
        "capacity": reg.capacity,
        "max_clock_step_s": reg.max_clock_step_s,
        "capabilities": sorted(reg.capabilities),
        **({} if reg.lockout is None else {"lockout": dataclasses.asdict(reg.lockout)}),
    }


def registration_from(m: dict[str, Any]) -> Registration:
    capabilities = m.get("capabilities", [])
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise ProtocolViolation("field 'capabilities' must be a list of strings")
    return Registration(
        door_id=hex_field(m, "door_id"),
        identity_public=hex_field(m, "identity_public"),
        sealing_public=hex_field(m, "sealing_public"),
        capacity=int_field(m, "capacity"),
        max_clock_step_s=int_field(m, "max_clock_step_s"),
        capabilities=frozenset(capabilities),
        lockout=_lockout_from(m),
    )


def _lockout_from(m: dict[str, Any]) -> LockoutPolicy | None:
    """The optional ``lockout`` object: ``failures``, ``window_s``, ``duration_s``."""
    value = m.get("lockout")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolViolation("field 'lockout' must be an object")
    policy = LockoutPolicy(
        failures=int_field(value, "failures"),
        window_s=int_field(value, "window_s"),
        duration_s=int_field(value, "duration_s"),
    )
    if policy.failures < 1 or policy.window_s < 1 or policy.duration_s < 1:
        raise ProtocolViolation("field 'lockout' needs failures, window_s, duration_s >= 1")
    return policy


def outputs_to(outputs: Outputs) -> dict[str, Any]:
    return {
        "frames": [{"channel": str(f.channel), "data": f.frame.hex()} for f in outputs.frames],
        "acks": [a.hex() for a in outputs.acks],
        "challenges": [{"uid": u.hex(), "challenge": c.hex()} for u, c in outputs.challenges],
        "energised": list(outputs.energised),
        "power_lost": outputs.power_lost,
    }


def _list(m: dict[str, Any], name: str) -> list[Any]:
    value = m.get(name, [])
    if not isinstance(value, list):
        raise ProtocolViolation(f"field {name!r} must be a list")
    return value


def outputs_from(m: dict[str, Any]) -> Outputs:
    frames = [SentFrame(channel_field(f), hex_field(f, "data")) for f in _list(m, "frames")]
    acks = []
    for ack in _list(m, "acks"):
        acks.append(hex_field({"ack": ack}, "ack"))
    challenges = [(hex_field(c, "uid"), hex_field(c, "challenge")) for c in _list(m, "challenges")]
    energised = [int_field({"e": e}, "e") for e in _list(m, "energised")]
    return Outputs(frames, acks, challenges, energised, bool(m.get("power_lost", False)))


def observed_to(seen: Observed) -> dict[str, Any]:
    return {
        "list_version": seen.list_version,
        "list_digest": seen.list_digest.hex(),
        "key_epoch": seen.key_epoch,
        "audit_head_seq": seen.audit_head_seq,
        "lock_time": seen.lock_time,
    }


def observed_from(m: dict[str, Any]) -> Observed:
    return Observed(
        list_version=int_field(m, "list_version"),
        list_digest=hex_field(m, "list_digest"),
        key_epoch=int_field(m, "key_epoch"),
        audit_head_seq=int_field(m, "audit_head_seq"),
        lock_time=int_field(m, "lock_time"),
    )
