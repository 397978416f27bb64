"""In-memory transports with modelled latency, loss and BLE airtime.

Theory of operation
-------------------
**MQTT** (:class:`MqttLink`): one link per online door and direction, standing for
the door's TCP connection to the broker and the broker's to the cloud. A message
sent at ``now`` arrives after ``latency_s`` plus a uniform jitter of ``±jitter_s``.
Each transmission is lost with probability ``loss``; QoS 1 retransmits it after
``retry_s``, as often as it takes, so a loss only adds delay, never drops the
message. Delivery is FIFO (a message never overtakes the one sent before it, as on
one TCP stream): its arrival is at least the previous message's arrival. (A broker
outage is the scenario runner's: while the broker is down nothing is sent at all.)

**BLE** (:class:`BleModel`): a phone's connection takes ``connect_s``; a frame is
carried in writes of at most ``mtu_payload`` bytes, one per connection event, so
its airtime is ``ceil(size / mtu_payload) * interval_s``. The figures are modest
defaults for a 7.5-30 ms connection interval; they set virtual time only.

Every random draw comes from the ``random.Random`` passed in, seeded by the caller.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import Scheduler

__all__ = ["BleModel", "MqttLink", "MqttModel"]


@dataclass(frozen=True)
class MqttModel:
    """Latency, jitter, loss and QoS 1 retry of an MQTT path (seconds, probability)."""

    latency_s: float = 0.020
    jitter_s: float = 0.005
    loss: float = 0.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        if self.latency_s < self.jitter_s or self.jitter_s < 0 or self.retry_s <= 0:
            raise ValueError("need latency_s >= jitter_s >= 0 and retry_s > 0")


@dataclass
class MqttLink:
    """One direction of one door's MQTT path: FIFO, delayed, lossy with redelivery."""

    scheduler: Scheduler
    model: MqttModel
    rng: random.Random
    sent: int = 0
    retransmissions: int = 0
    _last_arrival: float = field(default=0.0)

    def send(self, deliver: Callable[[], object]) -> float:
        """Schedule ``deliver`` at the message's arrival; return that time."""
        model = self.model
        delay = model.latency_s + self.rng.uniform(-model.jitter_s, model.jitter_s)
        if model.loss:
            while self.rng.random() < model.loss:
                delay += model.retry_s
                self.retransmissions += 1
        arrival = max(self.scheduler.now + delay, self._last_arrival)
        self._last_arrival = arrival
        self.sent += 1
        self.scheduler.at(arrival, deliver)
        return arrival


@dataclass(frozen=True)
class BleModel:
    """BLE timing: connection set-up, per-write airtime, the phone's think time."""

    connect_s: float = 0.250
    interval_s: float = 0.015
    mtu_payload: int = 244
    step_s: float = 0.030
    """Processing between request and answer (the lock's and the phone's)."""

    def airtime(self, size: int) -> float:
        """Seconds to carry a ``size``-byte frame (one write per connection event)."""
        writes = max(1, -(-size // self.mtu_payload))
        return writes * self.interval_s
