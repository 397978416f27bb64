"""Fast mode: a discrete-event building simulation on a virtual clock.

Theory of operation: :mod:`.clock` is the scheduler (virtual time, deterministic
ties); :mod:`.net` models MQTT latency/loss and BLE airtime; :mod:`.building` builds
the cloud database and the commissioned locks from a :class:`BuildingConfig`;
:mod:`.world` wires the real sans-IO cores (controller, protocol, cloud rules and
sync engine) together through those models and drives residents' traffic and
scripted changes; :mod:`.report` turns what happened into the key figures and their
canonical JSON. No asyncio, no sockets, no wall clock: the same config and seed
give the same report, byte for byte.

:func:`run_scenario` (:mod:`.scenario_run`) runs a scenario file instead: its world
(:mod:`.scenario_setup`, every lock on its own flash), its openings
(:func:`simulators.traffic.openings`, the list live mode replays too), its changes and
faults (:mod:`.scenario_faults`) and phone visits (:mod:`.scenario_visit`), and fills the
shared :class:`simulators.outcome.RunOutcome`.
"""

from __future__ import annotations

from .building import RESIDENTIAL, BuildingConfig, ScriptedChange
from .clock import Scheduler
from .net import BleModel, MqttModel
from .report import canonical_json
from .scenario_run import ScenarioRun, run_scenario
from .world import FastWorld, run_fast

__all__ = [
    "RESIDENTIAL",
    "BleModel",
    "BuildingConfig",
    "FastWorld",
    "MqttModel",
    "ScenarioRun",
    "Scheduler",
    "ScriptedChange",
    "canonical_json",
    "run_fast",
    "run_scenario",
]
