"""The adapter side of the JSON-lines protocol, around any :class:`LockUnderTest`.

Theory of operation: :func:`serve` reads one request per line, calls the matching
method of the wrapped lock, and writes one reply per line (flushed), until ``bye`` or
end of input. A malformed request or a failing lock gives an ``ok: false`` reply and
the loop goes on, so one bad stimulus never ends a run. Integrators whose firmware is
not in Python write this loop in their own language; for Python (or as a reference)
``python -m conformance.examples.reference_adapter`` shows it around our controller.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TextIO

from .jsonlines import (
    ProtocolViolation,
    channel_field,
    hex_field,
    int_field,
    number_field,
    observed_to,
    outputs_to,
    provision_from,
    registration_to,
)
from .lut import AdapterError, LockUnderTest

__all__ = ["serve"]

Handler = Callable[[LockUnderTest, dict[str, Any]], dict[str, Any]]

_HANDLERS: dict[str, Handler] = {
    "provision": lambda lock, m: registration_to(lock.provision(provision_from(m))),
    "connect": lambda lock, m: outputs_to(lock.connect(channel_field(m))),
    "disconnect": lambda lock, m: outputs_to(lock.disconnect(channel_field(m))),
    "deliver": lambda lock, m: outputs_to(lock.deliver(channel_field(m), hex_field(m, "frame"))),
    "deliver_segment": lambda lock, m: outputs_to(
        lock.deliver_segment(channel_field(m), hex_field(m, "segment"))
    ),
    "tap_card": lambda lock, m: outputs_to(lock.tap_card(hex_field(m, "uid"))),
    "answer_card": lambda lock, m: outputs_to(
        lock.answer_card(hex_field(m, "uid"), hex_field(m, "response"))
    ),
    "press_keys": lambda lock, m: outputs_to(lock.press_keys(_keys(m))),
    "advance": lambda lock, m: outputs_to(lock.advance(number_field(m, "seconds"))),
    "observe": lambda lock, m: observed_to(lock.observe()),
    "power_cut": lambda lock, m: _power_cut(lock),
    "arm_power_cut": lambda lock, m: _arm(lock, m),
    "restart": lambda lock, m: outputs_to(lock.restart()),
}


def _keys(m: dict[str, Any]) -> str:
    keys = m.get("keys")
    if not isinstance(keys, str):
        raise ProtocolViolation("field 'keys' must be a string")
    return keys


def _power_cut(lock: LockUnderTest) -> dict[str, Any]:
    lock.power_cut()
    return {}


def _arm(lock: LockUnderTest, m: dict[str, Any]) -> dict[str, Any]:
    lock.arm_power_cut(int_field(m, "at_write"), number_field(m, "landed"))
    return {}


def serve(lock: LockUnderTest, stdin: TextIO, stdout: TextIO) -> None:
    """Answer requests from ``stdin`` on ``stdout`` until ``bye`` or end of input."""
    for line in stdin:
        if not line.strip():
            continue
        reply, stop = _answer(lock, line)
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
        if stop:
            break
    lock.close()


def _answer(lock: LockUnderTest, line: str) -> tuple[dict[str, Any], bool]:
    request_id: object = None
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ProtocolViolation("a request is a JSON object")
        request_id, op = request.get("id"), request.get("op")
        if op == "bye":
            return {"id": request_id, "ok": True}, True
        handler = _HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ProtocolViolation(f"unknown op {op!r}")
        return {"id": request_id, "ok": True, **handler(lock, request)}, False
    except (ProtocolViolation, AdapterError) as exc:
        return {"id": request_id, "ok": False, "error": str(exc)}, False
    except Exception as exc:  # the lock broke: report it, keep serving
        return {"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}, False
