"""The bleak backends on a bumble central, driven only through bleak's public API.

A real :class:`controller.ble_door.BleDoor` and a phone radio share one
:class:`infra.radio.RadioLink` (the bench of ``test_ble_door``); the phone's code is
``BleakScanner`` / ``BleakClient`` with ``backend=`` and ``central=`` the bumble device.
Every wait is bounded by ``asyncio.timeout``; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import (
    BleakCharacteristicNotFoundError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bumble.device import Device

from infra.radio import RadioLink
from phone_bridge.bleak_bumble import BumbleClient, BumbleScanner, bumble_backends
from protocol import Hello, Receipt, decode_message
from protocol.segmentation import Reassembler, SegmentAck, segment_frame
from protocol.transport import (
    ADVERTISING_COMPANY_ID,
    CHAR_ACK_UUID,
    CHAR_INFO_UUID,
    CHAR_RX_UUID,
    CHAR_TX_UUID,
    SERVICE_UUID,
)
from tests.test_ble_door import WAIT, Bench, make_bench

CCCD_UUID = "00002902-0000-1000-8000-00805f9b34fb"


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    made = await make_bench(RadioLink())
    yield made
    await made.door.stop()
    await made.phone.power_off()


async def find_door(bench: Bench) -> BLEDevice:
    """Scan by service UUID until the door's advertisement carries its door id."""
    async with BleakScanner(
        service_uuids=[SERVICE_UUID], backend=BumbleScanner, central=bench.phone
    ) as scanner:
        async with asyncio.timeout(WAIT):
            async for device, adv in scanner.advertisement_data():
                if adv.manufacturer_data.get(ADVERTISING_COMPANY_ID) == bench.identity.door_id:
                    assert SERVICE_UUID in adv.service_uuids
                    return device
    raise AssertionError("unreachable")


class Inbox:
    """Frames notified on ``tx`` and acks notified on ``ack``, as queues."""

    def __init__(self) -> None:
        self.reassembler = Reassembler()
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.acks: asyncio.Queue[SegmentAck] = asyncio.Queue()

    def on_tx(self, _char: BleakGATTCharacteristic, value: bytearray) -> None:
        frame = self.reassembler.receive(bytes(value))
        if frame is not None:
            self.frames.put_nowait(frame)

    def on_ack(self, _char: BleakGATTCharacteristic, value: bytearray) -> None:
        self.acks.put_nowait(SegmentAck.from_bytes(bytes(value)))

    async def frame(self) -> bytes:
        async with asyncio.timeout(WAIT):
            return await self.frames.get()

    async def ack(self) -> SegmentAck:
        async with asyncio.timeout(WAIT):
            return await self.acks.get()


# --- scanning -------------------------------------------------------------------------------


async def test_scanner_finds_the_door_by_service_uuid_and_door_id(bench: Bench) -> None:
    device = await find_door(bench)
    assert device.address == bench.door.address.to_string(False)
    scanner_kwargs, _ = bumble_backends(bench.phone)
    async with BleakScanner(service_uuids=[SERVICE_UUID], **scanner_kwargs) as scanner:
        async with asyncio.timeout(WAIT):
            async for found, _adv in scanner.advertisement_data():
                if found.address == device.address:
                    break
        assert device.address in scanner.discovered_devices_and_advertisement_data
    assert bench.link.listeners == frozenset()  # stopping the scanner stopped the radio


async def test_scanner_filter_drops_other_services(bench: Bench) -> None:
    seen: list[str] = []
    other = BleakScanner(
        lambda d, _a: seen.append(d.address),
        service_uuids=["0000180d-0000-1000-8000-00805f9b34fb"],
        backend=BumbleScanner,
        central=bench.phone,
    )
    await other.start()
    await next_advertisement(bench)  # the scanner's own handler saw it first, and dropped it
    await other.stop()
    assert seen == []


async def next_advertisement(bench: Bench) -> None:
    """Wait (bounded) until the phone's radio hears the door's next advertisement."""
    heard = asyncio.Event()
    bench.phone.once(Device.EVENT_ADVERTISEMENT, lambda _advert: heard.set())
    async with asyncio.timeout(WAIT):
        await heard.wait()


# --- connecting, GATT and notifications -----------------------------------------------------


@pytest.mark.parametrize("mtu", [23, 247])
async def test_client_connects_discovers_and_exchanges_mtu(bench: Bench, mtu: int) -> None:
    device = await find_door(bench)
    client = BleakClient(device, backend=BumbleClient, central=bench.phone, mtu=mtu, timeout=WAIT)
    async with client:
        assert client.is_connected and client.mtu_size == mtu
        service = client.services.get_service(SERVICE_UUID)
        assert service is not None
        properties = {c.uuid: set(c.properties) for c in service.characteristics}
        assert properties == {
            CHAR_RX_UUID: {"write-without-response"},
            CHAR_TX_UUID: {"notify"},
            CHAR_ACK_UUID: {"write-without-response", "write", "notify"},
            CHAR_INFO_UUID: {"read"},
        }
        rx = service.get_characteristic(CHAR_RX_UUID)
        assert rx is not None and rx.max_write_without_response_size == mtu - 3
        assert await client.read_gatt_char(CHAR_INFO_UUID) == bench.identity.door_id
        with pytest.raises(BleakGATTProtocolError):  # rx is write-only: refused, at once
            await client.read_gatt_char(CHAR_RX_UUID)
    assert not client.is_connected


async def test_hello_by_notification_then_a_frame_and_its_answer(bench: Bench) -> None:
    inbox = Inbox()
    closed = asyncio.Event()
    _, client_kwargs = bumble_backends(bench.phone)
    client = BleakClient(
        bench.door.address.to_string(False),
        lambda _client: closed.set(),
        timeout=WAIT,
        **client_kwargs,
    )
    await client.connect()
    await client.start_notify(CHAR_ACK_UUID, inbox.on_ack)
    await client.start_notify(CHAR_TX_UUID, inbox.on_tx)
    hello = decode_message(await inbox.frame())
    assert isinstance(hello, Hello) and hello.door_id == bench.identity.door_id
    tx = client.services.get_characteristic(CHAR_TX_UUID)
    assert tx is not None
    cccd = tx.get_descriptor(CCCD_UUID)
    assert cccd is not None and await client.read_gatt_descriptor(cccd) == b"\x01\x00"

    grant = bench.grant_person()
    segments = segment_frame(grant, mtu=client.mtu_size, transfer_id=7)
    for segment in segments:
        await client.write_gatt_char(CHAR_RX_UUID, segment, response=False)
    assert await inbox.ack() == SegmentAck(transfer_id=7, next_index=len(segments))
    receipt = decode_message(await inbox.frame())
    assert isinstance(receipt, Receipt) and receipt.list_version == 1
    # The phone acks the lock's transfers on ack, here as a write with response.
    phone_ack = inbox.reassembler.ack()
    assert phone_ack is not None
    await client.write_gatt_char(CHAR_ACK_UUID, phone_ack.to_bytes(), response=True)

    await client.stop_notify(CHAR_TX_UUID)
    assert await client.read_gatt_descriptor(cccd) == b"\x00\x00"
    with pytest.raises(ValueError, match="CCCD"):  # bleak's rule; the door has no other
        await client.write_gatt_descriptor(cccd, b"\x01\x00")
    await client.disconnect()
    assert not client.is_connected and closed.is_set()
    with pytest.raises(BleakError, match="Service Discovery"):
        await client.read_gatt_char(CHAR_INFO_UUID)


async def test_door_dropping_the_link_calls_the_disconnected_callback(bench: Bench) -> None:
    closed = asyncio.Event()
    client = BleakClient(
        await find_door(bench),
        lambda _client: closed.set(),
        backend=BumbleClient,
        central=bench.phone,
        timeout=WAIT,
    )
    await client.connect()
    await bench.door.stop()
    async with asyncio.timeout(WAIT):
        await closed.wait()
    assert not client.is_connected
    await client.disconnect()  # a no-op once the link is gone


async def test_pair_on_connect_then_unpair_forgets_the_keys(bench: Bench) -> None:
    keystore = bench.phone.keystore
    client = BleakClient(
        await find_door(bench), backend=BumbleClient, central=bench.phone, timeout=WAIT, pair=True
    )
    await client.connect()
    assert client.is_connected
    assert keystore is not None and len(await keystore.get_all()) == 1
    await client.unpair()
    assert not client.is_connected and await keystore.get_all() == []


# --- errors ---------------------------------------------------------------------------------


async def test_connect_to_an_absent_address_fails_within_the_timeout(bench: Bench) -> None:
    client = BleakClient(
        "F0:00:00:00:00:99", backend=BumbleClient, central=bench.phone, timeout=0.05
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(WAIT):
        with pytest.raises(BleakDeviceNotFoundError, match="no device answered"):
            await client.connect()
    assert loop.time() - started < 1.0
    assert not client.is_connected


async def test_gatt_errors_become_bleak_errors(bench: Bench) -> None:
    async with BleakClient(
        await find_door(bench), backend=BumbleClient, central=bench.phone, timeout=WAIT
    ) as client:
        with pytest.raises(BleakGATTProtocolError) as caught:
            # Longer than an attribute may be (512 bytes): a long write the door refuses.
            await client.write_gatt_char(CHAR_ACK_UUID, bytes(600), response=True)
        assert caught.value.code is BleakGATTProtocolErrorCode.INVALID_ATTRIBUTE_VALUE_LENGTH
        with pytest.raises(BleakCharacteristicNotFoundError):
            await client.write_gatt_char("0000beef-0000-1000-8000-00805f9b34fb", b"x", True)
        with pytest.raises(BleakError, match="start notify"):
            await client.start_notify(CHAR_INFO_UUID, lambda _c, _v: None)  # no notify
        with pytest.raises(BleakError, match="already connected"):
            await client.connect()


@pytest.mark.parametrize(
    ("wanted", "found"),
    [(SERVICE_UUID, SERVICE_UUID), ("1800", "00001800-0000-1000-8000-00805f9b34fb")],
)
async def test_services_filter_limits_discovery(bench: Bench, wanted: str, found: str) -> None:
    async with BleakClient(
        await find_door(bench),
        services=[wanted],
        backend=BumbleClient,
        central=bench.phone,
        timeout=WAIT,
    ) as client:
        assert [s.uuid for s in client.services] == [found]


async def test_garbage_arguments_give_clear_errors(bench: Bench) -> None:
    phone = bench.phone
    with pytest.raises(TypeError, match="central must be a bumble Device"):
        BleakClient("F0:00:00:00:00:01", backend=BumbleClient, central="phone")
    with pytest.raises(TypeError, match="central"):
        BleakClient("F0:00:00:00:00:01", backend=BumbleClient)
    with pytest.raises(ValueError, match="not a Bluetooth address"):
        BleakClient("garbage", backend=BumbleClient, central=phone)
    with pytest.raises(TypeError, match="BLEDevice or an address"):
        BleakClient(42, backend=BumbleClient, central=phone)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mtu"):
        BleakClient("F0:00:00:00:00:01", backend=BumbleClient, central=phone, mtu=5)
    with pytest.raises(ValueError, match="timeout"):
        BleakClient("F0:00:00:00:00:01", backend=BumbleClient, central=phone, timeout=-1)
    with pytest.raises(TypeError, match=r"unknown keyword arguments.*colour"):
        BleakClient("F0:00:00:00:00:01", backend=BumbleClient, central=phone, colour=1)
    with pytest.raises(TypeError, match="central must be a bumble Device"):
        BleakScanner(backend=BumbleScanner, central=None)
    with pytest.raises(ValueError, match="scanning_mode"):
        BleakScanner(None, None, "sideways", backend=BumbleScanner, central=phone)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BleakScanner(service_uuids=["not a uuid"], backend=BumbleScanner, central=phone)
    client = BleakClient("F0:00:00:00:00:01", backend=BumbleClient, central=phone)
    with pytest.raises(BleakError, match="Not connected"):
        await client.start_notify(CHAR_TX_UUID, lambda _c, _v: None)
    with pytest.raises(BleakError, match="Not connected"):
        await client.pair()
