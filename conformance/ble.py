"""The BLE adapter: the lock's BLE face reached through the bleak API.

Theory of operation: :class:`BleLock` drives the reference lock's real BLE face
(:class:`controller.ble_door.BleDoor`, a bumble GATT server) over bumble's virtual radio
(:class:`infra.radio.RadioLink`), as a phone does: a ``bleak.BleakClient`` (bumble
backend, :mod:`phone_bridge.bleak_bumble`) connects, enables notifications on ``ack``
and ``tx`` (§7.1.4), writes segments to ``rx`` (§7.1.1) and reassembles what the lock
notifies on ``tx``. Frames on ``ble:N`` channels and BLE segments take that path, cut
for the negotiated ATT MTU; everything else (the MQTT channel, card reader, keypad,
clock, observation, power) goes to the same lock through :class:`InProcessLock`, which
stands in for a bench's side channel (a debug UART, a supply relay).

Everything runs on one asyncio loop in a background thread: bumble and the lock are
only touched there, and each sync call waits for its coroutine with a timeout. A BLE
stimulus is over when the link has been quiet for ``settle`` seconds (the virtual radio
answers within milliseconds); its outputs are the frames and acks notified until then
and the door releases the face reported. One BLE connection at a time, as the lock
serves one phone at a time. Provisioning and restart rebuild the radio: a new link,
a new door device, a new phone, as after a real power cycle.

On hardware, the same client code runs with bleak's platform backend against the real
lock's address; only the side channel needs a bench (see ``docs/conformance.md``).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError

from controller.ble_door import BleDoor
from infra.radio import RadioLink, device_on_link
from protocol import ProtocolError
from protocol.segmentation import Reassembler, segment_frame
from protocol.transport import CHAR_ACK_UUID, CHAR_RX_UUID, CHAR_TX_UUID

from .faced import FacedLock
from .inprocess import InProcessLock
from .lut import (
    AdapterError,
    Channel,
    Outputs,
    ProvisionRequest,
    SentFrame,
)
from .lut import Registration as LutRegistration

__all__ = ["BleLock"]

_T = TypeVar("_T")
PHONE_ADDRESS = "F0:00:00:00:C0:01"


class BleLock(FacedLock):
    """The reference lock, its BLE traffic over the virtual radio and a bleak client."""

    def __init__(
        self,
        inner: InProcessLock | None = None,
        *,
        mtu: int = 247,
        settle: float = 0.03,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(inner, timeout=timeout)
        self._mtu, self._settle = mtu, settle
        self._door: BleDoor | None = None
        self._phone: Any = None
        self._client: BleakClient | None = None
        self._channel: Channel | None = None
        self._tx = Reassembler()
        self._pending = Outputs()
        self._events = 0
        self._transfer = 0

    # --- the loop thread -----------------------------------------------------------------

    face = "BLE"

    def _face_error(self, exc: Exception) -> AdapterError | None:
        return AdapterError(f"BLE: {exc}") if isinstance(exc, BleakError) else None

    # --- radio ---------------------------------------------------------------------------

    async def _rebuild(self) -> None:
        """A fresh link with the door (serving the current runtime) and the phone's radio."""
        await self._teardown()
        link = RadioLink()
        self._door = BleDoor.on_link(
            self._inner.runtime, link, on_energise=self._on_energise, advertising_interval_ms=20
        )
        await self._door.start()
        self._phone = device_on_link(link, "conformance phone", PHONE_ADDRESS)
        await self._phone.power_on()

    async def _teardown(self) -> None:
        await self._drop_client()
        if self._door is not None:
            await self._door.stop()
            self._door = None
        if self._phone is not None:
            await self._phone.power_off()
            self._phone = None

    async def _drop_client(self) -> None:
        client, self._client, self._channel = self._client, None, None
        if client is not None and client.is_connected:
            await client.disconnect()

    def _on_energise(self, seconds: int) -> None:
        self._pending.energised.append(seconds)
        self._events += 1

    def _on_tx(self, _char: BleakGATTCharacteristic, value: bytearray) -> None:
        self._events += 1
        try:
            frame = self._tx.receive(bytes(value))
        except ProtocolError:
            frame = bytes(value)  # passed on as sent: the suite fails it as undecodable
        if frame is not None and self._channel is not None:
            self._pending.frames.append(SentFrame(self._channel, frame))

    def _on_ack(self, _char: BleakGATTCharacteristic, value: bytearray) -> None:
        self._events += 1
        self._pending.acks.append(bytes(value))

    async def _quiet(self) -> Outputs:
        """Wait until nothing arrived for ``settle`` seconds; return what did."""
        while True:
            seen = self._events
            await asyncio.sleep(self._settle)
            if self._events == seen:
                break
        outputs, self._pending = self._pending, Outputs()
        return outputs

    # --- LockUnderTest -------------------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> LutRegistration:
        async def provision() -> LutRegistration:
            registration = self._inner.provision(request)
            await self._rebuild()
            return registration

        return self._run(provision())

    def connect(self, channel: Channel) -> Outputs:
        if channel.transport == "mqtt":
            return self._inner_call(lambda: self._inner.connect(channel))
        return self._run(self._connect(channel))

    async def _connect(self, channel: Channel) -> Outputs:
        if self._client is not None:
            raise AdapterError(f"{self._channel} is still connected: one BLE link at a time")
        if self._door is None:
            raise AdapterError("the lock is not on the air (provision or restart it)")
        client = BleakClient(
            str(self._door.address).split("/")[0],
            backend=_bumble_client(),
            central=self._phone,
            mtu=self._mtu,
            timeout=self._timeout / 2,
        )
        self._tx, self._pending = Reassembler(), Outputs()
        self._client, self._channel = client, channel
        await client.connect()
        await client.start_notify(CHAR_ACK_UUID, self._on_ack)
        await client.start_notify(CHAR_TX_UUID, self._on_tx)
        return await self._quiet()

    def disconnect(self, channel: Channel) -> Outputs:
        if channel.transport == "mqtt":
            return self._inner_call(lambda: self._inner.disconnect(channel))

        async def disconnect() -> Outputs:
            self._require(channel)
            await self._drop_client()
            return await self._quiet()

        return self._run(disconnect())

    def _require(self, channel: Channel) -> BleakClient:
        if self._client is None or self._channel != channel:
            raise AdapterError(f"{channel} is not the connected BLE link ({self._channel})")
        return self._client

    def deliver(self, channel: Channel, frame: bytes) -> Outputs:
        if channel.transport == "mqtt":
            return self._inner_call(lambda: self._inner.deliver(channel, frame))

        async def deliver() -> Outputs:
            client = self._require(channel)
            self._transfer = (self._transfer + 1) % 0x10000
            segments = segment_frame(frame, mtu=client.mtu_size, transfer_id=self._transfer)
            for segment in segments:
                await client.write_gatt_char(CHAR_RX_UUID, segment, response=False)
            return await self._quiet()

        if not frame:
            raise AdapterError("BLE cannot carry an empty frame (a transfer needs a segment)")
        return self._run(deliver())

    def deliver_segment(self, channel: Channel, segment: bytes) -> Outputs:
        async def write() -> Outputs:
            client = self._require(channel)
            await client.write_gatt_char(CHAR_RX_UUID, segment, response=False)
            return await self._quiet()

        return self._run(write())

    def power_cut(self) -> None:
        async def cut() -> None:
            self._inner.power_cut()
            await self._teardown()

        self._run(cut())

    def arm_power_cut(self, at_write: int, landed: float = 0.5) -> None:
        self._inner_call(lambda: self._inner.arm_power_cut(at_write, landed))

    def restart(self) -> Outputs:
        async def restart() -> Outputs:
            outputs = self._inner.restart()
            await self._rebuild()
            return outputs

        return self._run(restart())

    def close(self) -> None:
        if self._loop.is_running():
            try:
                self._run(self._teardown())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()


def _bumble_client() -> type:
    from phone_bridge.bleak_bumble import BumbleClient

    return BumbleClient
