"""A lock at run time: the controller core bound to its flash and clock.

Theory of operation: :class:`LockRuntime` is the one place where the core's
persistence actions meet the flash. It executes every
:class:`~controller.events.PersistTransaction` and
:class:`~controller.events.PersistSnapshot` in order, *before* it hands the
remaining actions (sends, energise, card challenges) to the face that drives it
(MQTT, BLE, the simulator). A power cut (:class:`controller.storage.PowerLost`)
therefore stops the lock before any later action, as on real hardware.

The clock is injected (``clock()`` returns seconds); so is randomness.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .config import ControllerConfig
from .core import Controller
from .events import Action, Event, PersistSnapshot, PersistTransaction
from .identity import LockIdentity
from .storage import Flash, NotFormattedError

__all__ = ["LockRuntime", "NotProvisionedError"]


class NotProvisionedError(Exception):
    """The flash image holds no lock: run ``door-controller provision`` first."""


@dataclass
class LockRuntime:
    """A controller whose persistence actions go to ``flash``."""

    controller: Controller
    flash: Flash
    clock: Callable[[], float]

    @classmethod
    def provision(
        cls,
        flash: Flash,
        identity: LockIdentity,
        cloud_public_key: bytes,
        *,
        config: ControllerConfig,
        clock: Callable[[], float],
        wall_time: int,
        random: Callable[[int], bytes] = os.urandom,
    ) -> LockRuntime:
        """Write a new lock into an empty (or to-be-erased) flash image and boot it."""
        controller, actions = Controller.provision(
            identity, cloud_public_key, config, random=random, now=clock(), wall_time=wall_time
        )
        first, *rest = actions
        assert isinstance(first, PersistSnapshot)
        flash.format(first.data)
        runtime = cls(controller, flash, clock)
        runtime.execute(rest)
        return runtime

    @classmethod
    def boot(
        cls,
        flash: Flash,
        *,
        config: ControllerConfig,
        clock: Callable[[], float],
        random: Callable[[int], bytes] = os.urandom,
    ) -> LockRuntime:
        """Boot the lock stored in ``flash`` (replaying its journal)."""
        loaded = flash.load()
        if loaded.snapshot is None:
            raise NotProvisionedError("the flash image holds no lock; provision it first")
        controller, actions = Controller.boot(
            loaded.snapshot, loaded.transactions, config, random=random, now=clock()
        )
        runtime = cls(controller, flash, clock)
        runtime.execute(actions)
        return runtime

    def handle(self, event: Event) -> list[Action]:
        """Feed one event at the current clock reading; persist; return the other actions."""
        return self.execute(self.controller.handle(event, self.clock()))

    def handle_timeout(self) -> list[Action]:
        """Run timers due now."""
        return self.execute(self.controller.handle_timeout(self.clock()))

    def next_deadline(self) -> float | None:
        return self.controller.next_deadline()

    def execute(self, actions: list[Action]) -> list[Action]:
        """Write persistence actions to flash in order; return the rest, in order."""
        rest: list[Action] = []
        for action in actions:  # no action class has subclasses: identity is the test
            if type(action) is PersistTransaction:
                self._append(action.data)
            elif type(action) is PersistSnapshot:
                self.flash.compact(action.data)
            else:
                rest.append(action)
        return rest

    def _append(self, data: bytes) -> None:
        try:
            self.flash.append(data)
        except NotFormattedError:
            self.flash.compact(self.controller.state.to_snapshot())
