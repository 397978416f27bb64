"""A live lock that can lose power: mid-update if a fault says so, and boot again from flash.

Theory of operation
-------------------
Every live lock's runtime is a :class:`PoweredRuntime` on a :class:`CuttableFlash` (in
memory, standing for the lock's flash chip) reading its own
:class:`~simulators.live._clock.LockClock`.

* A plain ``power_cut`` is the runner's business: it stops the lock's face (MQTT or BLE),
  drops the runtime, and after the outage boots a new runtime from the same medium
  (:func:`reboot`, :meth:`controller.runtime.LockRuntime.boot`): whatever the lock held
  in RAM and had not committed is gone, as on hardware.
* ``power_cut`` with ``during_update`` arms the flash (:meth:`CuttableFlash.arm`). The
  next journal append that carries a list change (the commit of a bundle the lock has
  received and verified) then lands torn — half of its record reaches the medium, using
  the flash's own fault hook (:class:`controller.storage.PowerCut`) — and raises
  :class:`~controller.storage.PowerLost`. That is after the bundle's receipt into RAM
  and before its commit: the lock sends no receipt. :class:`PoweredRuntime` catches the
  loss (a face must not see a ``BaseException`` from the core), goes dark — every later
  event is ignored — and calls ``on_power_lost`` so the runner stops the face and
  schedules the reboot. After the reboot the lock must hold the old list (the torn record
  is not a commit), and the cloud, which got no receipt, still shows the door pending.
* ``on_version`` is called whenever the lock's held list version changes: the runner's
  exact record of when a lock applied an update. :class:`LockMeter` counts the bundle
  bytes the lock received and the time its BLE links were up (on the loop's clock: air
  time is physical), across reboots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.config import ControllerConfig
from controller.events import Action, Connected, Disconnected, Event, FrameReceived
from controller.runtime import LockRuntime
from controller.state import ListChanged, LockState, decode_transaction
from controller.storage import Flash, MemoryMedium, PowerCut, PowerLost
from protocol import MessageType

__all__ = ["CuttableFlash", "LockMeter", "PoweredRuntime", "reboot", "stored_state"]

_TYPE_OFFSET = 3  # magic (2) | version (1) | type (1): docs/protocol.md §2.1


@dataclass
class LockMeter:
    """What crossed a lock's faces: bundle bytes in, BLE link time."""

    bundle_bytes: int = 0
    ble_airtime_s: float = 0.0
    _up_since: dict[int, float] = field(default_factory=dict)

    def saw(self, event: Event) -> None:
        if isinstance(event, FrameReceived):
            frame = event.data
            if len(frame) > _TYPE_OFFSET and frame[_TYPE_OFFSET] == MessageType.BUNDLE:
                self.bundle_bytes += len(frame)
        elif isinstance(event, Connected | Disconnected) and event.channel.transport == "ble":
            now = asyncio.get_running_loop().time()
            if isinstance(event, Connected):
                self._up_since[event.channel.number] = now
            elif (since := self._up_since.pop(event.channel.number, None)) is not None:
                self.ble_airtime_s += now - since


class CuttableFlash(Flash):
    """A flash chip in memory that can be armed to lose power while committing an update."""

    def __init__(self, medium: MemoryMedium | None = None) -> None:
        super().__init__(medium or MemoryMedium())
        self.armed = False
        self.dead = False
        self.cut_version: int | None = None
        """The list version whose commit the cut tore (None: no cut yet)."""

    def arm(self) -> None:
        """Lose power at the next commit of a list change."""
        self.armed = True

    def append(self, txn: bytes) -> None:
        if self.dead:
            raise PowerLost("the device is off")
        if self.armed:
            changed = [r for r in decode_transaction(txn) if isinstance(r, ListChanged)]
            if changed:
                self.armed, self.dead = False, True
                self.cut_version = changed[-1].version
                torn = Flash(self.medium, fault=PowerCut(at_write=1), capacity=self.capacity)
                torn.append(txn)  # half the record lands, then PowerLost
        super().append(txn)

    def compact(self, snapshot: bytes) -> None:
        if self.dead:
            raise PowerLost("the device is off")
        super().compact(snapshot)


class PoweredRuntime(LockRuntime):
    """A :class:`LockRuntime` that survives its flash losing power: it goes dark instead.

    (A dataclass subclass: ``on_power_lost`` / ``on_version`` are set after construction.)
    """

    on_power_lost: Callable[[], None] | None = None
    on_version: Callable[[int], None] | None = None
    dark: bool = False
    meter: LockMeter | None = None

    def handle(self, event: Event) -> list[Action]:
        if self.meter is not None and not self.dark:
            self.meter.saw(event)
        return self._guarded(lambda: super(PoweredRuntime, self).handle(event))

    def handle_timeout(self) -> list[Action]:
        return self._guarded(lambda: super(PoweredRuntime, self).handle_timeout())

    def _guarded(self, step: Callable[[], list[Action]]) -> list[Action]:
        if self.dark:
            return []
        before = self.controller.state.held.version
        try:
            actions = step()
        except PowerLost:
            self.dark = True
            if self.on_power_lost is not None:
                self.on_power_lost()
            return []
        after = self.controller.state.held.version
        if after != before and self.on_version is not None:
            self.on_version(after)
        return actions


def reboot(
    old: PoweredRuntime,
    *,
    config: ControllerConfig,
    random: Callable[[int], bytes],
) -> PoweredRuntime:
    """Boot a new runtime from ``old``'s flash medium (after a power cut)."""
    assert isinstance(old.flash.medium, MemoryMedium)
    flash = CuttableFlash(old.flash.medium)
    runtime = PoweredRuntime.boot(flash, config=config, clock=old.clock, random=random)
    assert isinstance(runtime, PoweredRuntime)
    runtime.on_power_lost, runtime.on_version = old.on_power_lost, old.on_version
    runtime.meter = old.meter
    return runtime


def stored_state(runtime: LockRuntime, *, config: ControllerConfig) -> LockState:
    """What ``runtime``'s flash holds, read without booting (nothing is written)."""
    loaded = Flash(runtime.flash.medium).load()
    assert loaded.snapshot is not None
    return LockState.replay(
        loaded.snapshot, loaded.transactions, audit_capacity=config.audit_capacity
    )
