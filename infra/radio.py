"""Our virtual BLE radio: bumble's ``LocalLink``, fixed for many devices, with optional timing.

Theory of operation: bumble ships a virtual radio made of a
:class:`bumble.link.LocalLink` (the air) and one :class:`bumble.controller.Controller`
per device (the chip). Each :class:`bumble.device.Device` talks HCI to its
controller in-process, so a whole building of locks and phones runs in one
event loop. Three faults of the stock pieces (bumble 0.0.236) are fixed here:

* **Advert fan-out.** ``LocalLink`` hands every advertisement to every other
  controller, so the cost grows with the square of the device count (200
  advertising locks saturate the loop). :class:`RadioLink` delivers
  advertisements only to *listeners*: controllers that are scanning or have a
  connection pending. :class:`RadioController` tells its link whenever that
  changes. A ``CONNECT_IND`` goes only to controllers that are advertising.
* **Connect cancel.** The stock controller ignores LE Create Connection Cancel,
  so ``Device.connect(timeout=...)`` to an absent peer never returns.
  :class:`RadioController` answers the cancel as a real chip does (Vol 4, Part E
  §7.8.13): Command Complete, then LE Connection Complete with status Unknown
  Connection Identifier, and the host's ``connect`` raises a timeout.
* **Scan response.** The stock controller repeats the advertising data as the
  scan response. :class:`RadioController` reports the advertiser's real scan
  response data (the link looks it up), so data that only fits the scan
  response (a lock's door id, ``docs/protocol.md`` §7.1.5) reaches scanners.

``LocalLink`` has no radio timing at all: a connect takes about a millisecond and
any amount of data crosses at once. :class:`RadioTiming`, off by default, adds a
model of a BLE connection: data in each direction leaves only at connection
events, ``connection_interval`` apart, each carrying at most
``packets_per_interval`` link-layer packets of ``octets_per_packet`` bytes.
Simplifications: the two directions keep separate event clocks, LL control PDUs
(connect, terminate) are not delayed, and no packet is ever lost.

Use :func:`device_on_link` to make a device on a link; it must run inside the
event loop that will drive it (bumble's controllers bind to the running loop).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bumble import hci, ll
from bumble.controller import Controller
from bumble.core import PhysicalTransport
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

__all__ = ["RadioController", "RadioLink", "RadioTiming", "device_on_link", "phone_address"]


@dataclass(frozen=True, kw_only=True)
class RadioTiming:
    """When link-layer data may cross the air on a connection (per direction)."""

    connection_interval: float = 0.030
    """Seconds between connection events (BLE allows 7.5 ms to 4 s)."""
    packets_per_interval: int = 4
    """Link-layer data packets one connection event carries."""
    octets_per_packet: int = 27
    """Link-layer payload per packet: 27 without Data Length Extension, up to 251 with."""

    def __post_init__(self) -> None:
        if self.connection_interval <= 0:
            raise ValueError("connection_interval must be positive")
        if self.packets_per_interval < 1 or self.octets_per_packet < 1:
            raise ValueError("packets_per_interval and octets_per_packet must be at least 1")

    def packets_for(self, pdu: bytes) -> int:
        """How many link-layer packets carry one L2CAP PDU of this size."""
        return max(1, math.ceil(len(pdu) / self.octets_per_packet))


@dataclass(slots=True)
class _Queued:
    pdu: bytes
    packets_left: int


class _Pipe:
    """One direction of one connection under a :class:`RadioTiming`: a FIFO drained
    at connection events, so PDUs arrive in order and no faster than the model."""

    def __init__(self, timing: RadioTiming, deliver: Callable[[bytes], None]) -> None:
        self._timing, self._deliver = timing, deliver
        self._queue: deque[_Queued] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._anchor = asyncio.get_running_loop().time()

    def push(self, pdu: bytes) -> None:
        self._queue.append(_Queued(pdu, self._timing.packets_for(pdu)))
        if self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._timing.connection_interval
        events = math.floor((loop.time() - self._anchor) / interval) + 1
        self._timer = loop.call_at(self._anchor + events * interval, self._on_event)

    def _on_event(self) -> None:
        self._timer = None
        budget = self._timing.packets_per_interval
        while self._queue and budget:
            head = self._queue[0]
            sent = min(budget, head.packets_left)
            head.packets_left -= sent
            budget -= sent
            if head.packets_left == 0:
                self._queue.popleft()
                self._deliver(head.pdu)
        if self._queue:
            self._schedule()


class RadioLink(LocalLink):
    """A ``LocalLink`` that sends adverts only to listeners and can model timing.

    ``timing=None`` (the default) delivers data as soon as the loop runs, like the
    stock link. Controllers that are not :class:`RadioController` still work but
    count as always listening, as on the stock link.
    """

    def __init__(self, *, timing: RadioTiming | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.timing = timing
        self._listeners: set[Controller] = set()
        self._pipes: dict[tuple[int, hci.Address], _Pipe] = {}

    # --- who hears advertisements -------------------------------------------------------

    @property
    def listeners(self) -> frozenset[Controller]:
        """The controllers advertisements are delivered to now."""
        return frozenset(self._listeners)

    def add_controller(self, controller: Controller) -> None:
        super().add_controller(controller)
        self.listening_changed(controller)

    def remove_controller(self, controller: Controller) -> None:
        super().remove_controller(controller)
        self._listeners.discard(controller)

    def listening_changed(self, controller: Controller) -> None:
        """Re-read whether *controller* scans or connects (its hooks call this)."""
        if controller in self.controllers and _is_listening(controller):
            self._listeners.add(controller)
        else:
            self._listeners.discard(controller)

    def send_advertising_pdu(
        self, sender_controller: Controller, packet: ll.AdvertisingPdu
    ) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(packet, ll.ConnectInd):
            for c in self.controllers:
                if c is not sender_controller and c.is_advertising:
                    loop.call_soon(c.on_ll_advertising_pdu, packet)
            return
        scan_response = _scan_response(sender_controller, packet)
        for c in tuple(self._listeners):
            if c is sender_controller:
                continue
            if isinstance(c, RadioController):
                loop.call_soon(c.on_advert, packet, scan_response)
            else:
                loop.call_soon(c.on_ll_advertising_pdu, packet)

    # --- data on connections ------------------------------------------------------------

    def send_acl_data(
        self,
        sender_controller: Controller,
        destination_address: hci.Address,
        transport: PhysicalTransport,
        data: bytes,
    ) -> None:
        if self.timing is None or transport != PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        key = (id(sender_controller), destination_address)
        pipe = self._pipes.get(key)
        if pipe is None:
            source = sender_controller.random_address

            def deliver(pdu: bytes) -> None:
                self._deliver_le(source, destination_address, pdu)

            pipe = self._pipes[key] = _Pipe(self.timing, deliver)
        pipe.push(data)

    def _deliver_le(self, source: hci.Address, destination: hci.Address, pdu: bytes) -> None:
        controller = self.find_le_controller(destination)
        if controller is not None:
            controller.on_link_acl_data(source, PhysicalTransport.LE, pdu)


def _is_listening(controller: Controller) -> bool:
    if not isinstance(controller, RadioController):
        return True
    return controller.le_scan_enable or controller.pending_le_connection is not None


def _scan_response(sender: Controller, packet: ll.AdvertisingPdu) -> bytes:
    """The scan response data of the advertiser that sent *packet* (empty if none)."""
    address = getattr(packet, "advertiser_address", None)
    legacy = sender.le_legacy_advertiser
    if legacy.enabled and legacy.address == address:
        return bytes(legacy.scan_response_data)
    for advertising_set in sender.advertising_sets.values():
        if advertising_set.enabled and advertising_set.address == address:
            return bytes(advertising_set.scan_response_data)
    return b""


class RadioController(Controller):
    """A bumble virtual controller that answers connect cancels, reports real scan
    responses and tells its :class:`RadioLink` when it starts or stops listening."""

    # --- listening hooks ----------------------------------------------------------------

    def _listening_changed(self) -> None:
        if isinstance(self.link, RadioLink):
            self.link.listening_changed(self)

    def on_hci_le_set_scan_enable_command(
        self, command: hci.HCI_LE_Set_Scan_Enable_Command
    ) -> hci.HCI_StatusReturnParameters:
        result = super().on_hci_le_set_scan_enable_command(command)
        self._listening_changed()
        return result

    def on_hci_le_set_extended_scan_enable_command(
        self, command: hci.HCI_LE_Set_Extended_Scan_Enable_Command
    ) -> hci.HCI_StatusReturnParameters:
        result = super().on_hci_le_set_extended_scan_enable_command(command)
        self._listening_changed()
        return result

    def on_hci_le_create_connection_command(
        self, command: hci.HCI_LE_Create_Connection_Command
    ) -> None:
        super().on_hci_le_create_connection_command(command)
        self._listening_changed()

    def on_hci_le_extended_create_connection_command(
        self, command: hci.HCI_LE_Extended_Create_Connection_Command
    ) -> None:
        super().on_hci_le_extended_create_connection_command(command)
        self._listening_changed()

    def create_le_connection(self, peer_address: hci.Address) -> None:
        super().create_le_connection(peer_address)
        self._listening_changed()

    # --- LE Create Connection Cancel (Vol 4, Part E §7.8.13) ----------------------------

    def on_hci_le_create_connection_cancel_command(
        self, _command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Drop the pending connection; report it failed *after* the Command Complete.

        With nothing pending (the connection completed as the host gave up) this
        still answers success, as the stock controller does, so the host's
        ``connect`` returns the connection instead of failing on a race.
        """
        pending = self.pending_le_connection
        if pending is not None:
            self.pending_le_connection = None
            self._listening_changed()
            # Our Command Complete is queued after this handler returns; schedule the
            # failure event one loop turn later so that the host sees it second.
            asyncio.get_running_loop().call_soon(self._report_cancelled, pending.peer_address)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def _report_cancelled(self, peer_address: hci.Address) -> None:
        self.send_hci_packet(
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=peer_address.address_type,
                peer_address=peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
        )

    # --- advertisements with their real scan response -----------------------------------

    def on_advert(self, pdu: ll.AdvertisingPdu, scan_response: bytes) -> None:
        """Take an advertisement from the link, with its advertiser's scan response."""
        if not isinstance(pdu, ll.AdvInd | ll.AdvExtInd):
            self.on_ll_advertising_pdu(pdu)
            return
        scanning = self.le_scan_enable
        if scanning:
            self._report_advert(pdu, scan_response)
        # The stock handler also serves periodic syncs and pending connections; keep
        # it from sending its own reports (advert data repeated as scan response).
        self.le_scan_enable = False
        try:
            self.on_advertising_pdu(pdu)
        finally:
            self.le_scan_enable = scanning
            self._listening_changed()

    def _report_advert(self, pdu: ll.AdvInd | ll.AdvExtInd, scan_response: bytes) -> None:
        if self.le_features & hci.LeFeatureMask.LE_EXTENDED_ADVERTISING:
            kinds = hci.HCI_LE_Extended_Advertising_Report_Event.EventType
            for kind, data in (
                (kinds.CONNECTABLE_ADVERTISING, pdu.data),
                (kinds.SCAN_RESPONSE, scan_response),
            ):
                self.send_hci_packet(
                    hci.HCI_LE_Extended_Advertising_Report_Event(
                        [_extended_report(pdu, kind, data)]
                    )
                )
            return
        legacy = hci.HCI_LE_Advertising_Report_Event
        for event_type, data in (
            (legacy.EventType.ADV_IND, pdu.data),
            (legacy.EventType.SCAN_RSP, scan_response),
        ):
            report = legacy.Report(
                event_type=event_type,
                address_type=pdu.advertiser_address.address_type,
                address=pdu.advertiser_address,
                data=data,
                rssi=-50,
            )
            self.send_hci_packet(legacy([report]))


def _extended_report(
    pdu: ll.AdvInd | ll.AdvExtInd, event_type: int, data: bytes
) -> hci.HCI_LE_Extended_Advertising_Report_Event.Report:
    """One extended advertising report, with the fields the stock controller uses."""
    direct = pdu.target_address if isinstance(pdu, ll.AdvExtInd) else None
    return hci.HCI_LE_Extended_Advertising_Report_Event.Report(
        event_type=event_type,
        address_type=pdu.advertiser_address.address_type,
        address=pdu.advertiser_address,
        primary_phy=hci.Phy.LE_1M,
        secondary_phy=hci.Phy.LE_1M,
        advertising_sid=0,
        tx_power=0,
        rssi=-50,
        periodic_advertising_interval=0,
        direct_address_type=direct.address_type if direct else 0,
        direct_address=direct or hci.Address.ANY,
        data=data,
    )


def device_on_link(link: RadioLink, name: str, address: str | hci.Address) -> Device:
    """A bumble :class:`~bumble.device.Device` with its own :class:`RadioController` on *link*.

    *address* (``"F0:00:00:00:00:01"``) becomes the device's random static address and
    the controller's public address. Call inside the running event loop; then
    ``await device.power_on()``.
    """
    address = hci.Address(address) if isinstance(address, str) else address
    controller = RadioController(name, link=link, public_address=str(address))
    host = Host(controller, AsyncPipeSink(controller))
    return Device(name=name, address=address, host=host)


def phone_address(n: int) -> str:
    """The BLE address of the building's ``n``-th phone (1 to 65,535): ``F0:00:00:00:02:01``
    for the first; the fourth byte carries the number's high byte past 255."""
    if not 1 <= n <= 0xFFFF:
        raise ValueError(f"a building has phones 1 to 65535, not {n}")
    return f"F0:00:00:{n >> 8:02X}:02:{n & 0xFF:02X}"
