"""bleak backends that drive a bumble central: phone code on the bleak API, over bumble's radio.

Theory of operation: the phone's BLE code is written against bleak (``BleakScanner``,
``BleakClient``); bleak picks a platform backend (BlueZ, CoreBluetooth, WinRT) unless
``backend=`` names another class, and passes its extra keyword arguments to that class.
:class:`BumbleScanner` and :class:`BumbleClient` are such backends. Both take
``central=``, a powered-on bumble :class:`~bumble.device.Device` (the phone's radio),
typically on the :class:`infra.radio.RadioLink` shared with simulated locks::

    phone = device_on_link(link, "phone", "F0:00:00:00:00:01")
    await phone.power_on()
    async with BleakScanner(
        service_uuids=[SERVICE_UUID], backend=BumbleScanner, central=phone
    ) as scanner:
        ...  # scanner.advertisement_data(), discovered_devices, ...
    async with BleakClient(door, backend=BumbleClient, central=phone, timeout=5) as client:
        await client.start_notify(CHAR_TX_UUID, on_segment)  # the lock sends HELLO
        await client.write_gatt_char(CHAR_RX_UUID, segment, response=False)

:func:`bumble_backends` returns these keyword arguments for both classes. On real hardware
pass none of them: ``BleakScanner(service_uuids=[SERVICE_UUID])`` and ``BleakClient(device)``
use the platform's default backend unchanged. (A bumble central can also drive a real USB
dongle: build the ``Device`` with ``Device.with_hci`` over ``bumble.transport.open_transport``.)

The scanner reports each bumble advertisement (advertising data merged with the scan response,
so a lock's door id, ``docs/protocol.md`` §7.1.5, arrives once the scan response does) through
the base class's ``create_or_update_device`` and ``call_detection_callbacks``; the
``BLEDevice.details`` is the bumble ``Advertisement``. ``BumbleClient.connect`` connects,
exchanges the ATT MTU (``mtu=``, 247 by default, §7.1.4), discovers services, characteristics
and descriptors (only ``services=`` if given) and fills ``services``. Every step is bounded by
the client's ``timeout``; bumble errors become bleak errors naming the step: an ATT error
response is ``BleakGATTProtocolError``, no answer to a connect is ``BleakDeviceNotFoundError``.
Misuse (a wrong ``central``, an unknown keyword, a bad address or MTU) raises ``TypeError`` or
``ValueError`` at construction. ``pair`` runs bumble's SMP with the central's pairing config
(Just Works by default); ``unpair`` deletes the keys the central stored for the peer and
disconnects. ``use_cached`` reads are not cached: they read from the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_str
from bumble import att, core, hci
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer

__all__ = ["DEFAULT_MTU", "BumbleClient", "BumbleScanner", "bumble_backends"]

logger = logging.getLogger(__name__)

DEFAULT_MTU = 247
"""The ATT MTU the client asks for: one 244-byte write per segment (§7.1.4)."""
_PLATFORM_ARGS = frozenset({"bluez", "winrt", "cb"})
"""Platform-specific dicts bleak always passes; the bumble backends ignore them."""
_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
_T = TypeVar("_T")
_Type = AdvertisingData.Type


def bumble_backends(central: Device) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments for ``BleakScanner`` and ``BleakClient`` to use *central*."""
    return {"backend": BumbleScanner, "central": central}, {
        "backend": BumbleClient,
        "central": central,
    }


def _check_central(central: object) -> Device:
    if not isinstance(central, Device):
        raise TypeError(f"central must be a bumble Device, not {type(central).__name__}")
    return central


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(kwargs) - _PLATFORM_ARGS)
    if unknown:
        raise TypeError(f"unknown keyword arguments for the bumble backend: {unknown}")


def _uuid(uuid: core.UUID) -> str:
    """A bumble UUID as bleak writes it (lower-case 128-bit string)."""
    return normalize_uuid_str(uuid.to_hex_str("-"))


def _bumble_uuid(uuid: str) -> core.UUID:
    """A bleak UUID string as bumble compares it on the air (16-bit when it can be)."""
    uuid = normalize_uuid_str(uuid)
    if uuid.startswith("0000") and uuid.endswith(_BASE_UUID_TAIL):
        return core.UUID.from_16_bits(int(uuid[4:8], 16))
    return core.UUID(uuid)


# --- scanner ----------------------------------------------------------------------------------


class BumbleScanner(BaseBleakScanner):
    """A bleak scanner on a bumble central (``BleakScanner(..., backend=BumbleScanner,
    central=device)``)."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"],
        *,
        central: Device,
        **kwargs: Any,
    ) -> None:
        _check_kwargs(kwargs)
        if scanning_mode not in ("active", "passive"):
            raise ValueError(f"scanning_mode must be 'active' or 'passive', not {scanning_mode!r}")
        if service_uuids is not None:
            service_uuids = [normalize_uuid_str(u) for u in service_uuids]
        super().__init__(detection_callback, service_uuids)
        self._central = _check_central(central)
        self._active = scanning_mode == "active"
        self._scanning = False

    async def start(self) -> None:
        if self._scanning:
            raise BleakError("scanner already started")
        self.seen_devices = {}
        self._central.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        self._scanning = True
        try:
            await self._central.start_scanning(active=self._active)
        except core.BaseBumbleError as error:
            self._scanning = False
            self._central.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            raise BleakError(f"start scanning failed: {error!r}") from error

    async def stop(self) -> None:
        if not self._scanning:
            return
        self._scanning = False
        self._central.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await self._central.stop_scanning()

    def _on_advertisement(self, advert: Advertisement) -> None:
        data = advert.data
        uuids = [
            _uuid(uuid)
            for kind in _UUID_LISTS
            for uuid in AdvertisingData.uuid_list_to_objects(
                b"".join(data.get_all(kind, raw=True)), _UUID_LISTS[kind]
            )
        ]
        if not self.is_allowed_uuid(uuids):
            return
        name = data.get(_Type.COMPLETE_LOCAL_NAME) or data.get(_Type.SHORTENED_LOCAL_NAME)
        tx_power = data.get(_Type.TX_POWER_LEVEL)
        makers = data.get_all(_Type.MANUFACTURER_SPECIFIC_DATA, raw=True)
        services = data.get_all(_Type.SERVICE_DATA_128_BIT_UUID) + data.get_all(
            _Type.SERVICE_DATA_16_BIT_UUID
        )
        adv = AdvertisementData(
            local_name=name,
            manufacturer_data={
                int.from_bytes(m[:2], "little"): m[2:] for m in makers if len(m) >= 2
            },
            service_data={_uuid(uuid): value for uuid, value in services},
            service_uuids=uuids,
            tx_power=tx_power,
            rssi=advert.rssi,
            platform_data=(advert,),
        )
        address = advert.address.to_string(False)
        device = self.create_or_update_device(str(advert.address), address, name, advert, adv)
        self.call_detection_callbacks(device, adv)


_UUID_LISTS = {
    _Type.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _Type.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _Type.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
    _Type.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
}


# --- client -----------------------------------------------------------------------------------


def _peer_address(address_or_ble_device: BLEDevice | str) -> hci.Address:
    if isinstance(address_or_ble_device, BLEDevice):
        details = address_or_ble_device.details
        if isinstance(details, Advertisement):
            return details.address
        address_or_ble_device = address_or_ble_device.address
    if not isinstance(address_or_ble_device, str):
        raise TypeError(
            f"expected a BLEDevice or an address string, not {type(address_or_ble_device).__name__}"
        )
    try:
        return hci.Address(address_or_ble_device)
    except ValueError:
        raise ValueError(
            f"not a Bluetooth address: {address_or_ble_device!r} (expected XX:XX:XX:XX:XX:XX)"
        ) from None


class BumbleClient(BaseBleakClient):
    """A bleak client on a bumble central (``BleakClient(device, backend=BumbleClient,
    central=device)``); ``mtu=`` is the ATT MTU requested on connect."""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        services: set[str] | None = None,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        central: Device,
        mtu: int = DEFAULT_MTU,
        **kwargs: Any,
    ) -> None:
        _check_kwargs(kwargs)
        self._peer_address = _peer_address(address_or_ble_device)
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(mtu, int) or not att.ATT_DEFAULT_MTU <= mtu <= 517:
            raise ValueError(f"mtu must be an int from 23 to 517, not {mtu!r}")
        self._central = _check_central(central)
        self._mtu = mtu
        self._requested = [_bumble_uuid(u) for u in services] if services else []
        self._name = getattr(address_or_ble_device, "name", None) or self.address
        self._peer: Peer | None = None
        self._subscribers: dict[int, Callable[[bytes], None]] = {}
        self._bonded: set[str] = set()

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        return att.ATT_DEFAULT_MTU if self._peer is None else self._peer.gatt_client.mtu

    @property
    def is_connected(self) -> bool:
        return self._peer is not None

    async def _step(self, step: str, work: Awaitable[_T]) -> _T:
        """Await *work* within the timeout; bumble errors become bleak errors naming *step*."""
        try:
            async with asyncio.timeout(self._timeout):
                return await work
        except att.ATT_Error as error:
            raise BleakGATTProtocolError(error.error_code) from error
        except (core.BaseBumbleError, TimeoutError) as error:
            raise BleakError(f"{step} with {self.address} failed: {error!r}") from error

    def _require(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self._peer is not None:
            raise BleakError("Client is already connected")
        timeout = kwargs.get("timeout", self._timeout)
        try:
            connection = await self._central.connect(self._peer_address, timeout=timeout)
        except core.TimeoutError:
            raise BleakDeviceNotFoundError(
                self.address, f"connect: no device answered at {self.address} in {timeout} s"
            ) from None
        except core.BaseBumbleError as error:
            raise BleakError(f"connect to {self.address} failed: {error!r}") from error
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        self._peer = peer = Peer(connection)
        try:
            await self._step("MTU exchange", peer.request_mtu(self._mtu))
            self.services = await self._step("service discovery", self._discover(peer))
            if pair:
                await self.pair()
        except BaseException:
            with contextlib.suppress(BleakError):  # keep the error of the step that failed
                await self.disconnect()
            raise

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service in await peer.discover_services(self._requested):
            bleak_service = BleakGATTService(service, service.handle, _uuid(service.uuid))
            collection.add_service(bleak_service)
            for char in await peer.discover_characteristics(service=service):
                bleak_char = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    _uuid(char.uuid),
                    sorted(gatt_char_props_to_strs(int(char.properties))),
                    lambda: self.mtu_size - 3,
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)
                for descriptor in await peer.discover_descriptors(char):
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor, descriptor.handle, _uuid(descriptor.type), bleak_char
                        )
                    )
        return collection

    def _on_disconnection(self, reason: int) -> None:
        logger.debug("%s: disconnected (reason 0x%02X)", self.address, reason)
        self._peer, self.services = None, None
        self._subscribers.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        peer = self._peer
        if peer is None:
            return
        try:
            await self._step("disconnect", peer.connection.disconnect())
        finally:
            if self._peer is peer:  # no disconnection event came: forget the link anyway
                peer.connection.remove_listener(
                    Connection.EVENT_DISCONNECTION, self._on_disconnection
                )
                self._on_disconnection(hci.HCI_CONNECTION_TERMINATED_BY_LOCAL_HOST_ERROR)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        connection = self._require().connection
        await self._step("pairing", connection.pair())
        self._bonded.add(connection.peer_address.to_string(False))  # the identity address

    async def unpair(self) -> None:
        """Forget the keys stored for this peer (by address or identity), then disconnect."""
        keystore = self._central.keystore
        if keystore is not None:
            ours = self._bonded | {self._peer_address.to_string(False)}
            for name, _keys in await self._step("unpair", keystore.get_all()):
                if name.split("/")[0] in ours:
                    await self._step("unpair", keystore.delete(name))
        await self.disconnect()

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._require()
        return bytearray(await self._step("read", peer.read_value(characteristic.obj)))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        peer = self._require()
        await self._step("write", peer.write_value(characteristic.obj, bytes(data), response))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._require()
        return bytearray(await self._step("descriptor read", peer.read_value(descriptor.obj)))

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        peer = self._require()
        await self._step("descriptor write", peer.write_value(descriptor.obj, bytes(data), True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        peer = self._require()
        if not {"notify", "indicate"} & set(characteristic.properties):
            uuid = characteristic.uuid
            raise BleakError(f"start notify: characteristic {uuid} has neither notify nor indicate")

        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        self._subscribers[characteristic.handle] = subscriber
        await self._step("start notify", peer.subscribe(characteristic.obj, subscriber))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._require()
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._step("stop notify", peer.unsubscribe(characteristic.obj, subscriber))
