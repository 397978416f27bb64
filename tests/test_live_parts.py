"""Live mode's parts, without a building: the lock that loses power mid-update, the
clocks, the phone's signal switch.

The lock runs on the controller rig's fake cloud (``tests/controller_harness.py``): a
bundle arrives, the armed flash tears the commit, the runtime goes dark without a
receipt, and a reboot from the same medium holds the old list; the same bundle then
applies as if nothing had happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
import pytest
from bumble import hci

from controller.config import ControllerConfig
from controller.events import MQTT, FrameReceived, Send
from infra.radio import phone_address
from phone_bridge.cloud_client import CloudClient, CloudUnreachableError
from protocol import Receipt, decode_message
from simulators.live._clock import LockClock, ScenarioClock
from simulators.live._lock import CuttableFlash, PoweredRuntime, reboot, stored_state
from simulators.live._signal import Signal
from tests.controller_harness import Cloud, CountingRandom, card_entry, keycard, lock_identity

CONFIG = ControllerConfig()


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def provisioned() -> tuple[PoweredRuntime, Cloud, list[str]]:
    identity = lock_identity()
    cloud = Cloud(identity)
    runtime = PoweredRuntime.provision(
        CuttableFlash(),
        identity,
        cloud.public_key,
        config=CONFIG,
        clock=ManualClock(),
        wall_time=1_700_000_000,
        random=CountingRandom(),
    )
    assert isinstance(runtime, PoweredRuntime)
    seen: list[str] = []
    runtime.on_version = lambda version: seen.append(f"v{version}")
    runtime.on_power_lost = lambda: seen.append("power lost")
    return runtime, cloud, seen


def receipts(actions: Sequence[object]) -> list[Receipt]:
    frames = [a.frame for a in actions if isinstance(a, Send)]
    return [m for f in frames if isinstance(m := decode_message(f), Receipt)]


def test_a_power_cut_during_an_update_keeps_the_old_list_and_sends_no_receipt() -> None:
    runtime, cloud, seen = provisioned()
    cloud.commit(card_entry(keycard(1)))
    assert receipts(runtime.handle(FrameReceived(MQTT, cloud.bundle(0))))
    flash = runtime.flash
    assert isinstance(flash, CuttableFlash)
    flash.arm()
    cloud.commit(card_entry(keycard(2)))
    update = cloud.bundle(1)

    assert runtime.handle(FrameReceived(MQTT, update)) == []
    assert runtime.dark and flash.cut_version == 2
    assert seen == ["v1", "power lost"]
    assert runtime.handle(FrameReceived(MQTT, update)) == []  # a dark lock does nothing
    assert stored_state(runtime, config=CONFIG).held.version == 1

    booted = reboot(runtime, config=CONFIG, random=CountingRandom("boot"))
    assert booted.controller.state.held.version == 1
    (receipt,) = receipts(booted.handle(FrameReceived(MQTT, update)))
    assert receipt.list_version == 2 and seen[-1] == "v2"


def test_an_armed_flash_lets_everything_but_a_list_change_through() -> None:
    runtime, cloud, _ = provisioned()
    flash = runtime.flash
    assert isinstance(flash, CuttableFlash)
    flash.arm()
    rotation = cloud.rotate()  # a journal write without a list change
    runtime.handle(FrameReceived(MQTT, rotation))
    assert flash.armed and not runtime.dark
    assert runtime.controller.state.cloud.epoch == 1


async def test_scenario_clock_starts_at_zero_and_runs_speed_times_faster() -> None:
    clock = ScenarioClock(datetime(2026, 1, 5, tzinfo=UTC), speed=60.0)
    before = clock.now()
    assert before < 0 and clock.wall() < clock.start_unix
    clock.start()
    assert 0 <= clock.now() < 60 and clock.now() > before
    started = asyncio.get_running_loop().time()
    await asyncio.sleep(0.05)
    elapsed = asyncio.get_running_loop().time() - started
    assert clock.now() >= 60 * elapsed  # wall seconds times the speed
    await clock.sleep_until(clock.now() + 3)
    assert clock.wall() >= clock.start_unix + 5


async def test_lock_clock_steps_and_drifts_from_the_fault_on() -> None:
    clock = ScenarioClock(datetime(2026, 1, 5, tzinfo=UTC), speed=1.0)
    clock.start()
    lock = LockClock(clock)
    assert abs(lock() - clock.now()) < 0.01
    lock.disturb(step_s=-600.0, ppm=500_000.0)
    since = clock.now()
    assert abs(lock() - (clock.now() - 600)) < 0.05
    await asyncio.sleep(0.1)
    now = clock.now()
    drift = lock() - (now - 600)  # half a second per second since the fault, and a bit
    assert 0.5 * (now - since) <= drift <= 0.5 * (now - since) + 0.05


async def test_a_phone_without_signal_sees_an_unreachable_cloud() -> None:
    signal = Signal()
    signal.online = False
    async with CloudClient("http://127.0.0.1:9", token="t", transport=signal) as client:
        with pytest.raises(CloudUnreachableError):
            await client.bundles()
    assert signal.refused == 1
    assert isinstance(signal, httpx.AsyncBaseTransport)


def test_phone_addresses_are_valid_and_distinct_past_255() -> None:
    """A live building with hundreds of residents gives each phone its own BLE address."""
    addresses = [phone_address(n) for n in range(1, 0x10000)]
    assert addresses[0] == "F0:00:00:00:02:01"
    assert len(set(addresses)) == len(addresses)
    assert all(str(hci.Address(a)).startswith("F0:00:00:") for a in addresses[250:260])
    with pytest.raises(ValueError, match="phones 1 to 65535"):
        phone_address(0x10000)
