"""Live mode: a scenario on the real components, in compressed wall-clock time.

Theory of operation
-------------------
:func:`run_live` runs one :class:`~simulators.scenario.Scenario` on a live
:class:`~simulators.building.Building` — the cloud API under uvicorn on SQLite, an MQTT
broker (embedded amqtt, or Mosquitto at ``mqtt_url``), the MQTT bridge, every online door
as an MQTT door (also on the radio), every offline door as a BLE door on bumble's virtual
radio, every resident with the app as a phone over bleak on bumble — and returns the same
:class:`~simulators.outcome.RunOutcome` as fast mode: one
:class:`~simulators.outcome.Decision` per opening the locks decided, the faults and what
they did, the series and the key figures.

``speed`` compresses scenario time (60: a scenario minute per wall second); every part
reads the scenario clock (:mod:`._clock`): the cloud, the bridge and the phones its wall
time, every lock its own drifting clock. The openings are :func:`simulators.traffic.openings`
— exactly those fast mode replays — so a test can compare both runs' decisions
(:func:`simulators.outcome.disagreements`). The modules:

=================  ==========================================================================
``_run``           the runner: building, phones, the timeline, the monitor, the outcome
``_events``        scripted changes and faults, each done to the real parts
``_seed``          the scenario's world in the cloud database; commissioning each lock
``_lock``          a lock that loses power (mid-update too) and boots from its flash
``_clock``         scenario time; each lock's clock
``_radio``         a BLE face whose links drop mid-transfer (``ble_link_loss``)
``_signal``        a phone's mobile signal (``phone_offline``)
``_record``        updates, decisions, samples; the key figures
=================  ==========================================================================

:func:`run_scenario` is the synchronous entry point (``asyncio.run``), for the command line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ..outcome import RunOutcome
from ..scenario import Scenario, load_scenario
from ._run import LiveConfig, LiveRun

__all__ = ["LiveConfig", "run_live", "run_scenario"]


async def run_live(
    scenario: Scenario,
    *,
    speed: float = 1.0,
    mqtt_url: str | None = None,
    progress: Callable[[float], None] | None = None,
    timeout_s: float = 10.0,
) -> RunOutcome:
    """Run ``scenario`` on live components, ``speed`` scenario seconds per wall second.

    ``mqtt_url``: a running broker (``mqtt://host:port``, Mosquitto) instead of the
    embedded one — except for a scenario with a ``broker_outage``, which runs on an
    embedded broker it can stop (its fault record says so). ``progress`` hears the
    scenario seconds done so far (as fast mode's does), a few times a second. Raises
    :class:`~simulators.building.BuildingError` if the building cannot start.
    """
    config = LiveConfig(speed=speed, mqtt_url=mqtt_url, timeout_s=timeout_s)
    return await LiveRun(scenario, config, progress=progress).run()


def run_scenario(
    scenario: Scenario | str | Path,
    *,
    speed: float = 1.0,
    mqtt_url: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> RunOutcome:
    """:func:`run_live` in a new event loop; ``scenario`` may be a file's path."""
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    return asyncio.run(run_live(scenario, speed=speed, mqtt_url=mqtt_url, progress=progress))
