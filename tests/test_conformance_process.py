"""The adapter-process protocol: the example adapter passes; broken adapters are ERRORs.

The suite drives ``python -m conformance.examples.reference_adapter`` (the documented
example, wrapping the reference controller) through :class:`ProcessLock`, and must
judge it exactly as the in-process lock. Adapters that crash, hang or speak nonsense
give ERROR verdicts that say so, never a hung run or a false PASS.
"""

from __future__ import annotations

import io
import json
import sys

from conformance import Verdict, catalogue, run, select
from conformance.inprocess import InProcessLock
from conformance.process import ProcessLock
from conformance.serve import serve

EXAMPLE = [sys.executable, "-m", "conformance.examples.reference_adapter"]


def test_example_adapter_passes_every_requirement() -> None:
    lock = ProcessLock(EXAMPLE, timeout=30)
    try:
        results = run(lock)
    finally:
        lock.close()
    assert {r.requirement.name: r.detail for r in results if r.verdict is not Verdict.PASS} == {}
    assert len(results) == len(catalogue())
    assert lock._process.returncode == 0


def _one(command: list[str], timeout: float = 10) -> tuple[Verdict, str]:
    lock = ProcessLock(command, timeout=timeout)
    try:
        [result] = run(lock, select(catalogue(), only=["bundle_rollback_is_refused"]))
    finally:
        lock.close()
    return result.verdict, result.detail


def test_a_crashing_adapter_is_an_error_with_its_stderr() -> None:
    verdict, detail = _one(
        [sys.executable, "-c", "import sys; print('firmware panic', file=sys.stderr); sys.exit(3)"]
    )
    assert verdict is Verdict.ERROR
    assert "exit" in detail and "firmware panic" in detail


def test_a_hung_adapter_times_out() -> None:
    verdict, detail = _one([sys.executable, "-c", "import time; time.sleep(20)"], timeout=0.5)
    assert verdict is Verdict.ERROR and "no reply within 0.5 s" in detail


def test_an_adapter_writing_nonsense_is_an_error() -> None:
    verdict, detail = _one([sys.executable, "-c", "print('hello there'); input()"])
    assert verdict is Verdict.ERROR and "non-JSON" in detail


def test_serve_answers_bad_requests_and_keeps_going() -> None:
    requests = [
        "not json",
        json.dumps({"id": 1, "op": "dance"}),
        json.dumps({"id": 2, "op": "observe"}),
        json.dumps({"id": 3, "op": "deliver", "channel": "mqtt", "frame": "zz"}),
        json.dumps({"id": 4, "op": "connect", "channel": "wifi"}),
        json.dumps({"id": 5, "op": "bye"}),
        json.dumps({"id": 6, "op": "observe"}),
    ]
    out = io.StringIO()
    serve(InProcessLock(), io.StringIO("\n".join(requests) + "\n"), out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["ok"] for r in replies] == [False, False, False, False, False, True]
    assert "unknown op 'dance'" in replies[1]["error"]
    assert "not provisioned" in replies[2]["error"]
    assert "not hexadecimal" in replies[3]["error"]
    assert "not a channel" in replies[4]["error"]
    assert [r["id"] for r in replies[1:]] == [1, 2, 3, 4, 5]
