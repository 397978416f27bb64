"""The in-process adapter: the reference controller as a lock under test.

Theory of operation: :class:`InProcessLock` builds a
:class:`controller.runtime.LockRuntime` on an in-memory flash
(:class:`controller.storage.MemoryFlash`) and a virtual clock that only moves through
:meth:`advance`. Each stimulus becomes one controller event; persistence actions go to
the flash (so a power cut armed with :meth:`arm_power_cut` strikes exactly where the
firmware writes), the rest become :class:`~conformance.lut.Outputs`. BLE segments go
through one :class:`protocol.segmentation.Reassembler` per door, as the BLE face
(``controller/ble_door.py``) does, so a transfer cut by a dropped link resumes.

``controller_class`` and ``reassembler_per_connection`` exist so that tests can build
deliberately broken locks (mutants) from the reference; the suite itself never sets them.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

from controller.config import ControllerConfig
from controller.core import Controller
from controller.events import (
    MQTT as CONTROLLER_MQTT,
)
from controller.events import (
    Action,
    CardAnswered,
    CardChallenge,
    CardTapped,
    Connected,
    Disconnected,
    Energise,
    Event,
    FrameReceived,
    KeyPressed,
    PersistSnapshot,
    PersistTransaction,
    Send,
)
from controller.events import Channel as ControllerChannel
from controller.identity import LockIdentity
from controller.runtime import LockRuntime
from controller.storage import MemoryFlash, MemoryMedium, PowerCut, PowerLost
from protocol import ProtocolError
from protocol.segmentation import Reassembler

from .lut import (
    AdapterError,
    Channel,
    LockoutPolicy,
    LockUnderTest,
    Observed,
    Outputs,
    ProvisionRequest,
    SentFrame,
)
from .lut import Registration as LutRegistration

__all__ = ["InProcessLock"]

BOOT_READING = 1_000.0
"""The lock's monotonic clock reading at provisioning."""


def _counting_random(seed: str) -> Callable[[int], bytes]:
    """Deterministic randomness for a reproducible run (keys, challenges)."""
    counter = itertools.count()

    def draw(size: int) -> bytes:
        n = next(counter)
        out = b""
        while len(out) < size:
            out += hashlib.sha256(f"{seed}/{n}/{len(out)}".encode()).digest()
        return out[:size]

    return draw


class InProcessLock(LockUnderTest):
    """The reference lock in this process (the default lock under test)."""

    def __init__(
        self,
        *,
        controller_class: type[Controller] = Controller,
        config: ControllerConfig | None = None,
        reassembler_per_connection: bool = False,
        seed: str = "conformance",
    ) -> None:
        self._cls, self._base_config = controller_class, config or ControllerConfig()
        self._per_connection, self._seed = reassembler_per_connection, seed
        self._config = self._base_config
        self._runtime: LockRuntime | None = None
        self._flash: MemoryFlash | None = None
        self._now = BOOT_READING
        self._off = False
        self._reassembler = Reassembler()
        self._random = _counting_random(seed)

    @property
    def runtime(self) -> LockRuntime:
        """The running lock (a face such as :class:`controller.ble_door.BleDoor` serves it)."""
        return self._lock(allow_off=True)

    # --- provisioning and power ----------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> LutRegistration:
        self._config = _with(self._base_config, request)
        self._random = _counting_random(self._seed)
        identity = LockIdentity.generate(
            door_id=request.door_id,
            property_id=request.property_id,
            doorcode_secret=request.doorcode_secret,
            random=self._random,
        )
        self._now, self._off = BOOT_READING, False
        self._flash = MemoryFlash()
        controller, actions = self._cls.provision(
            identity,
            request.cloud_public_key,
            self._config,
            random=self._random,
            now=self._now,
            wall_time=request.lock_time,
        )
        first, *rest = actions
        assert isinstance(first, PersistSnapshot)
        self._flash.format(first.data)
        self._runtime = LockRuntime(controller, self._flash, lambda: self._now)
        self._runtime.execute(rest)
        self._reassembler = Reassembler(limits=self._config.limits)
        return LutRegistration(
            door_id=identity.door_id,
            identity_public=identity.identity_public,
            sealing_public=identity.sealing_public,
            capacity=self._config.capacity,
            max_clock_step_s=self._config.max_clock_step_s,
            capabilities=frozenset({"segments", "power_cut_at_write", "keypad", "cards"}),
            lockout=LockoutPolicy(
                failures=self._config.lockout_failures,
                window_s=round(self._config.lockout_window_s),
                duration_s=round(self._config.lockout_duration_s),
            ),
        )

    def power_cut(self) -> None:
        self._lock()
        self._off = True

    def arm_power_cut(self, at_write: int, landed: float = 0.5) -> None:
        runtime = self._lock()
        fault = PowerCut(at_write=at_write, torn_bytes=_torn(landed))
        flash = MemoryFlash(medium=self._flash_medium(), fault=fault)
        runtime.flash = flash
        self._flash = flash

    def restart(self) -> Outputs:
        self._lock(allow_off=True)
        self._now += 1.0
        self._flash = MemoryFlash(medium=self._flash_medium())
        self._reassembler = Reassembler(limits=self._config.limits)
        try:
            controller, actions = self._cls.boot(
                *self._loaded(), self._config, random=self._random, now=self._now
            )
        except Exception as exc:
            raise AdapterError(f"the lock failed to boot from flash: {exc}") from exc
        self._runtime = LockRuntime(controller, self._flash, lambda: self._now)
        self._off = False
        return self._run(lambda runtime: runtime.execute(actions))

    def _loaded(self) -> tuple[bytes, tuple[bytes, ...]]:
        assert self._flash is not None
        loaded = self._flash.load()
        if loaded.snapshot is None:
            raise AdapterError("the flash holds no lock after the power cut")
        return loaded.snapshot, loaded.transactions

    def _flash_medium(self) -> MemoryMedium:
        assert self._flash is not None
        medium = self._flash.medium
        assert isinstance(medium, MemoryMedium)
        return medium

    # --- stimuli -------------------------------------------------------------------------

    def connect(self, channel: Channel) -> Outputs:
        return self._event(Connected(_channel(channel)))

    def disconnect(self, channel: Channel) -> Outputs:
        if self._per_connection:
            self._reassembler = Reassembler(limits=self._config.limits)
        return self._event(Disconnected(_channel(channel)))

    def deliver(self, channel: Channel, frame: bytes) -> Outputs:
        return self._event(FrameReceived(_channel(channel), frame))

    def deliver_segment(self, channel: Channel, segment: bytes) -> Outputs:
        self._lock()
        try:
            frame = self._reassembler.receive(segment)
        except ProtocolError:
            return self._ack()  # §7.1.3: segment faults get the resume point, no ERROR
        if frame is None:
            return Outputs()
        return self._ack() + self.deliver(channel, frame)

    def _ack(self) -> Outputs:
        ack = self._reassembler.ack()
        return Outputs(acks=[ack.to_bytes()] if ack is not None else [])

    def tap_card(self, uid: bytes) -> Outputs:
        return self._event(CardTapped(uid))

    def answer_card(self, uid: bytes, response: bytes) -> Outputs:
        return self._event(CardAnswered(uid, response))

    def press_keys(self, keys: str) -> Outputs:
        outputs = Outputs()
        for key in keys:
            outputs += self._event(KeyPressed(key))
        return outputs

    def advance(self, seconds: float) -> Outputs:
        if seconds < 0:
            raise AdapterError("the clock only moves forward")
        runtime, end, outputs = self._lock(), self._now + seconds, Outputs()
        while (deadline := runtime.next_deadline()) is not None and deadline <= end:
            self._now = max(self._now, deadline)
            outputs += self._run(lambda r: r.handle_timeout())
            if deadline <= self._now and runtime.next_deadline() == deadline:
                break  # a timer that does not move would loop forever
        self._now = end
        return outputs

    def observe(self) -> Observed:
        controller = self._lock().controller
        state = controller.state
        return Observed(
            list_version=state.held.version,
            list_digest=state.held.digest,
            key_epoch=state.cloud.epoch,
            audit_head_seq=state.audit.head_seq,
            lock_time=controller.lock_time(self._now),
        )

    # --- plumbing ------------------------------------------------------------------------

    def _lock(self, *, allow_off: bool = False) -> LockRuntime:
        if self._runtime is None:
            raise AdapterError("the lock is not provisioned")
        if self._off and not allow_off:
            raise AdapterError("the lock is powered off; restart it first")
        return self._runtime

    def _event(self, event: Event) -> Outputs:
        self._lock()
        return self._run(lambda runtime: runtime.handle(event))

    def _run(self, step: Callable[[LockRuntime], list[Action]]) -> Outputs:
        try:
            actions = step(self._lock())
        except PowerLost:
            self._off = True
            return Outputs(power_lost=True)
        except ProtocolError as exc:
            raise AdapterError(f"the lock raised {type(exc).__name__}: {exc}") from exc
        return _outputs(actions)


def _torn(landed: float) -> int | None:
    """:class:`PowerCut` ``torn_bytes`` for a landed fraction: nothing below 0.25, all of
    the write above 0.75, else half of it."""
    if not 0.0 <= landed <= 1.0:
        raise AdapterError(f"landed must be within 0.0 and 1.0; got {landed}")
    if landed < 0.25:
        return 0
    return 1 << 62 if landed > 0.75 else None


def _with(config: ControllerConfig, request: ProvisionRequest) -> ControllerConfig:
    from dataclasses import replace

    return replace(config, capacity=request.capacity, utc_offset_minutes=request.utc_offset_minutes)


def _channel(channel: Channel) -> ControllerChannel:
    return (
        CONTROLLER_MQTT if channel.transport == "mqtt" else ControllerChannel("ble", channel.number)
    )


def _outputs(actions: list[Action]) -> Outputs:
    outputs = Outputs()
    for action in actions:
        if isinstance(action, Send):
            ours = (
                Channel("mqtt")
                if action.channel == CONTROLLER_MQTT
                else Channel("ble", action.channel.number)
            )
            outputs.frames.append(SentFrame(ours, action.frame))
        elif isinstance(action, Energise):
            outputs.energised.append(action.seconds)
        elif isinstance(action, CardChallenge):
            outputs.challenges.append((action.uid, action.challenge))
        elif isinstance(action, PersistTransaction | PersistSnapshot):
            raise AdapterError("a persistence action escaped the runtime")
    return outputs
