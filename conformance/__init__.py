"""The LK1 lock conformance suite: any lock, judged requirement by requirement.

Theory of operation: a *lock under test* (:class:`~conformance.lut.LockUnderTest`) is
driven stimulus by stimulus through an adapter — the reference controller in process
(:mod:`conformance.inprocess`), any program speaking the JSON-lines protocol
(:mod:`conformance.process`, :mod:`conformance.serve`), the reference lock's BLE face
through the bleak API (:mod:`conformance.ble`), or its MQTT face on a broker
(:mod:`conformance.mqtt`). The suite holds the cloud's
keys (:mod:`conformance.cloud`), provisions the lock through the documented
provisioning step, and runs a catalogue of requirements (``checks_*`` modules), each a
function named after the requirement it judges, tagged and tied to a section of
``docs/protocol.md`` (:mod:`conformance.registry`). :mod:`conformance.runner` turns
outcomes into verdicts, :mod:`conformance.report` into a table and JUnit XML, and
:mod:`conformance.cli` is the ``lock-conformance`` command. See ``docs/conformance.md``.
"""

from .lut import (
    AdapterError,
    Channel,
    LockUnderTest,
    Observed,
    Outputs,
    ProvisionRequest,
    Registration,
    SentFrame,
)
from .registry import CheckFailed, NotApplicable, Requirement, catalogue
from .runner import Result, Verdict, run, select

__all__ = [
    "AdapterError",
    "Channel",
    "CheckFailed",
    "LockUnderTest",
    "NotApplicable",
    "Observed",
    "Outputs",
    "ProvisionRequest",
    "Registration",
    "Requirement",
    "Result",
    "SentFrame",
    "Verdict",
    "catalogue",
    "run",
    "select",
]
