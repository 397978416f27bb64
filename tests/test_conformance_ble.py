"""The BLE adapter: the reference lock's BLE face, judged through the bleak API.

Frames on BLE channels cross bumble's virtual radio into the real GATT server
(``controller/ble_door.py``) as segments; the reference must pass the whole catalogue
this way too, and a mutant must still be caught when its bug is reached over the air.
"""

from __future__ import annotations

from conformance import Verdict, catalogue, run, select
from conformance.ble import BleLock
from conformance.inprocess import InProcessLock
from tests.conformance_mutants import MUTANTS


def test_reference_passes_every_requirement_over_ble() -> None:
    lock = BleLock()
    try:
        results = run(lock)
    finally:
        lock.close()
    assert {r.requirement.name: r.detail for r in results if r.verdict is not Verdict.PASS} == {}
    assert len(results) == len(catalogue())


def test_a_mutant_is_caught_over_ble() -> None:
    mutant = next(m for m in MUTANTS if m.name == "unlogged_phone_refusals")
    inner = mutant.build()
    assert isinstance(inner, InProcessLock)
    lock = BleLock(inner)
    try:
        results = run(lock, select(catalogue(), only=["phone"]))
    finally:
        lock.close()
    failed = {r.requirement.name for r in results if r.verdict is not Verdict.PASS}
    assert failed == {"phone_decisions_are_logged"}
