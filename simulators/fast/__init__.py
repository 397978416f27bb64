"""Fast mode: a discrete-event building simulation on a virtual clock.

Theory of operation: :mod:`.clock` is the scheduler (virtual time, deterministic
ties); :mod:`.net` models MQTT latency/loss and BLE airtime; :mod:`.building` builds
the cloud database and the commissioned locks from a :class:`BuildingConfig`;
:mod:`.world` wires the real sans-IO cores (controller, protocol, cloud rules and
sync engine) together through those models and drives residents' traffic and
scripted changes; :mod:`.report` turns what happened into the key figures and their
canonical JSON. No asyncio, no sockets, no wall clock: the same config and seed
give the same report, byte for byte.
"""

from __future__ import annotations

from .building import RESIDENTIAL, BuildingConfig, ScriptedChange
from .clock import Scheduler
from .net import BleModel, MqttModel
from .report import canonical_json
from .world import FastWorld, run_fast

__all__ = [
    "RESIDENTIAL",
    "BleModel",
    "BuildingConfig",
    "FastWorld",
    "MqttModel",
    "Scheduler",
    "ScriptedChange",
    "canonical_json",
    "run_fast",
]
