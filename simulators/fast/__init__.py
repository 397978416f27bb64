"""Fast mode: a scenario file on a virtual clock, the real cores inside.

Theory of operation: :func:`run_scenario` (:mod:`.scenario_run`) runs a scenario file:
its world (:mod:`.scenario_setup`: the cloud database, every lock commissioned on its own
flash), its openings (:func:`simulators.traffic.openings`, the list live mode replays
too), its changes and faults (:mod:`.scenario_faults`) and phone visits
(:mod:`.scenario_visit`), and fills the shared :class:`simulators.outcome.RunOutcome`.
:mod:`.clock` is the scheduler (virtual time, deterministic ties); :mod:`.net` models
MQTT latency/loss and BLE airtime; :mod:`.report` tracks door updates and writes the
figures' canonical JSON. No asyncio, no sockets, no wall clock: the same scenario gives
the same outcome, byte for byte.
"""

from __future__ import annotations

from .clock import Scheduler
from .net import BleModel, MqttModel
from .report import canonical_json
from .scenario_run import ScenarioRun, run_scenario

__all__ = [
    "BleModel",
    "MqttModel",
    "ScenarioRun",
    "Scheduler",
    "canonical_json",
    "run_scenario",
]
