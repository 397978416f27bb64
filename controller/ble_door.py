"""The lock's BLE face: a bumble GATT peripheral around a :class:`LockRuntime`.

Theory of operation (``docs/protocol.md`` §7): the lock is the GATT server. It
advertises its service UUID and, in manufacturer data, its door id (§7.1.5), and
serves four characteristics (§7.1.4):

========  ==============================  ===========================================
``rx``    write without response          phone → lock segments (§7.1.1)
``tx``    notify                          lock → phone segments
``ack``   write (± response), notify      segment acks (§7.1.2), both directions;
                                          a read returns the door's resume point
``info``  read                            the 16-byte door id
========  ==============================  ===========================================

Each BLE connection is one controller channel, ``Channel("ble", handle)``. On
connection the door feeds :class:`~controller.events.Connected`; the core answers
with HELLO, which waits until the phone enables notifications on ``tx`` (§7.1.4:
"the lock sends HELLO on tx once notifications on tx are enabled"). Every
:class:`~controller.events.Send` for the channel is cut by
:func:`~protocol.segmentation.segment_frame` for the connection's ATT MTU (23
until the phone exchanges a larger one; ``mtu - 3`` bytes per notification) and
notified on ``tx``, in order, by one writer task per connection.

Writes to ``rx`` go to **one reassembler per door** (§7.1.3), not per
connection, so a transfer cut by a dropped link resumes on the next connection.
A complete frame becomes :class:`~controller.events.FrameReceived`; the core
answers a bad frame with an ERROR frame and changes nothing. Segment errors
(duplicates, gaps, bad headers) are transport-level: they get no ERROR frame, only
an ack with the door's resume point. The door notifies its ack on ``ack`` when a
transfer completes, after every segment error, when the phone enables ``ack``
notifications (its resume point after a reconnect), and, if ``ack_every`` is set,
every ``ack_every`` segments. Acks the phone writes for ``tx`` transfers are
decoded and logged only.

Nothing raised by bytes from the air leaves a GATT callback: protocol errors are
logged at debug level; any other exception (a bug) is logged with its traceback
and the door keeps serving. :class:`~controller.events.Energise` calls
``on_energise(seconds)``; other non-send actions are logged. On disconnection the
door feeds :class:`~controller.events.Disconnected` and advertises again: one phone
at a time, since the controller stops advertising when a phone connects.

Radios. :meth:`BleDoor.on_link` puts the door on our virtual radio
(:class:`infra.radio.RadioLink`) for tests and simulation.
:meth:`BleDoor.open` takes a bumble transport string (``bumble.transport.open_transport``),
so the same door drives real hardware, for example:

* ``usb:0`` — the first USB Bluetooth dongle (``usb:2fe3:000b`` by vendor:product
  id; ``bumble-usb-probe`` lists them). On Linux the user needs access to the USB
  device (a udev rule, or run as root) and the kernel must not hold it
  (``sudo hciconfig hci0 down`` or unbind ``btusb``). Some chips need firmware:
  ``usb:[driver=rtk]0`` for Realtek.
* ``hci-socket:0`` — a Linux HCI socket (needs ``CAP_NET_ADMIN``).
* ``serial:/dev/ttyACM0,1000000`` — an HCI UART controller (e.g. Zephyr ``hci_uart``).
* ``tcp-client:127.0.0.1:6402`` / ``android-netsim`` — emulators.

For example::

    door = await BleDoor.open(runtime, "usb:0", on_energise=relay.pulse)
    await door.start()
    ...
    await door.stop()

(bumble 0.0.236 removed the ``link-relay`` transport; use ``tcp-client`` or
``android-netsim`` to reach a remote virtual controller.)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from bumble import hci
from bumble.att import ATT_READ_NOT_PERMITTED_ERROR, ATT_Error
from bumble.core import UUID, AdvertisingData, BaseBumbleError
from bumble.device import AdvertisingType, Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.transport import open_transport
from bumble.transport.common import Transport

from infra.radio import RadioLink, device_on_link
from protocol import ProtocolError
from protocol.segmentation import Reassembler, SegmentAck, segment_frame
from protocol.transport import (
    ADVERTISING_COMPANY_ID,
    CHAR_ACK_UUID,
    CHAR_INFO_UUID,
    CHAR_RX_UUID,
    CHAR_TX_UUID,
    SERVICE_UUID,
)

from .events import Action, Channel, Connected, Disconnected, Energise, Event, FrameReceived, Send
from .runtime import LockRuntime

__all__ = ["LEGACY_ADVERTISING_MAX", "BleDoor", "advertising_payloads", "door_address"]

logger = logging.getLogger(__name__)

LEGACY_ADVERTISING_MAX = 31
"""Bytes of advertising data (and of scan response data) in a legacy PDU."""
_U16 = 0x10000
_Properties = Characteristic.Properties


def _not_readable(_connection: Connection) -> bytes:
    """bumble calls a value's read even without READABLE: answer as the ATT spec says."""
    raise ATT_Error(error_code=ATT_READ_NOT_PERMITTED_ERROR)


def door_address(door_id: bytes) -> hci.Address:
    """A random static BLE address derived from *door_id* (two top bits set)."""
    digest = bytearray(hashlib.sha256(b"latchsim ble address" + door_id).digest()[:6])
    digest[0] |= 0xC0
    return hci.Address(":".join(f"{b:02X}" for b in digest))


def advertising_payloads(door_id: bytes) -> tuple[bytes, bytes]:
    """The advertising data and scan response of a lock (§7.1.5).

    Flags and the service UUID always go in the advertising data; the manufacturer
    data carrying the door id joins them if all fit one legacy PDU (31 bytes),
    else it goes in the scan response (always, with a 16-byte door id).
    """
    flags = (
        AdvertisingData.Type.FLAGS,
        bytes(
            [
                AdvertisingData.LE_GENERAL_DISCOVERABLE_MODE_FLAG
                | AdvertisingData.BR_EDR_NOT_SUPPORTED_FLAG
            ]
        ),
    )
    uuids = (
        AdvertisingData.Type.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        UUID(SERVICE_UUID).to_bytes(),
    )
    maker = (
        AdvertisingData.Type.MANUFACTURER_SPECIFIC_DATA,
        struct.pack("<H", ADVERTISING_COMPANY_ID) + door_id,
    )
    together = bytes(AdvertisingData([flags, uuids, maker]))
    if len(together) <= LEGACY_ADVERTISING_MAX:
        return together, b""
    return bytes(AdvertisingData([flags, uuids])), bytes(AdvertisingData([maker]))


@dataclass(eq=False)
class _Session:
    """One BLE connection: its channel, notification queue and held frames."""

    connection: Connection
    channel: Channel
    outbox: asyncio.Queue[tuple[Characteristic[bytes], bytes]] = field(
        default_factory=asyncio.Queue
    )
    writer: asyncio.Task[None] | None = None
    tx_enabled: bool = False
    held: list[bytes] = field(default_factory=list)
    """Frames the core sent before the phone enabled ``tx`` notifications."""
    segments_since_ack: int = 0


class BleDoor:
    """A :class:`LockRuntime` served over BLE by a bumble :class:`~bumble.device.Device`.

    Build with :meth:`on_link` (virtual radio) or :meth:`open` (a transport string),
    then ``await start()``; ``await stop()`` when done.
    """

    def __init__(
        self,
        runtime: LockRuntime,
        device: Device,
        *,
        on_energise: Callable[[int], None] | None = None,
        ack_every: int = 0,
        advertising_interval_ms: float = 100.0,
        transport: Transport | None = None,
    ) -> None:
        """Serve *runtime* on *device* (not yet powered on).

        *ack_every* > 0 also notifies the resume point every that many segments.
        *transport* is closed by :meth:`stop` (set by :meth:`open`).
        """
        self.runtime, self.device = runtime, device
        self._on_energise = on_energise
        self._ack_every = ack_every
        self._interval = advertising_interval_ms
        self._transport = transport
        self._reassembler = Reassembler(limits=runtime.controller.config.limits)
        self._sessions: dict[Channel, _Session] = {}
        self._next_transfer = 0
        self._running = False
        self._advertiser: asyncio.Task[None] | None = None
        self._tx, self._ack = self._build_service()
        device.on(Device.EVENT_CONNECTION, self._on_connection)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def on_link(
        cls,
        runtime: LockRuntime,
        link: RadioLink,
        *,
        address: str | hci.Address | None = None,
        on_energise: Callable[[int], None] | None = None,
        ack_every: int = 0,
        advertising_interval_ms: float = 100.0,
    ) -> BleDoor:
        """A door on our virtual radio; call inside the running event loop."""
        door_id = runtime.controller.door_id
        device = device_on_link(link, _device_name(door_id), address or door_address(door_id))
        return cls(
            runtime,
            device,
            on_energise=on_energise,
            ack_every=ack_every,
            advertising_interval_ms=advertising_interval_ms,
        )

    @classmethod
    async def open(
        cls,
        runtime: LockRuntime,
        transport: str,
        *,
        address: str | hci.Address | None = None,
        on_energise: Callable[[int], None] | None = None,
        ack_every: int = 0,
        advertising_interval_ms: float = 100.0,
    ) -> BleDoor:
        """A door on the bumble transport named *transport* (``"usb:0"``, …)."""
        door_id = runtime.controller.door_id
        hci_transport = await open_transport(transport)
        device = Device.with_hci(
            _device_name(door_id),
            _address(address) if address else door_address(door_id),
            hci_transport.source,
            hci_transport.sink,
        )
        return cls(
            runtime,
            device,
            on_energise=on_energise,
            ack_every=ack_every,
            advertising_interval_ms=advertising_interval_ms,
            transport=hci_transport,
        )

    def _build_service(self) -> tuple[Characteristic[bytes], Characteristic[bytes]]:
        """Add the lock's GATT service (§7.1.4); return the ``tx`` and ``ack`` characteristics."""
        rx: Characteristic[bytes] = Characteristic(
            CHAR_RX_UUID,
            _Properties.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE,
            CharacteristicValue(read=_not_readable, write=self._on_rx_write),
        )
        tx: Characteristic[bytes] = Characteristic(
            CHAR_TX_UUID, _Properties.NOTIFY, Characteristic.READABLE, b""
        )
        ack: Characteristic[bytes] = Characteristic(
            CHAR_ACK_UUID,
            _Properties.WRITE_WITHOUT_RESPONSE | _Properties.WRITE | _Properties.NOTIFY,
            Characteristic.READABLE | Characteristic.WRITEABLE,
            CharacteristicValue(read=self._read_ack, write=self._on_ack_write),
        )
        info: Characteristic[bytes] = Characteristic(
            CHAR_INFO_UUID, _Properties.READ, Characteristic.READABLE, self.door_id
        )
        tx.on(Characteristic.EVENT_SUBSCRIPTION, self._on_tx_subscription)
        ack.on(Characteristic.EVENT_SUBSCRIPTION, self._on_ack_subscription)
        self.device.add_service(Service(SERVICE_UUID, [rx, tx, ack, info]))
        return tx, ack

    # --- life cycle ---------------------------------------------------------------------

    @property
    def door_id(self) -> bytes:
        return self.runtime.controller.door_id

    @property
    def address(self) -> hci.Address:
        """The address the door advertises with."""
        return self.device.random_address

    async def start(self) -> None:
        """Power the radio on and advertise (again after every disconnection)."""
        await self.device.power_on()
        self._running = True
        await self._advertise()

    async def stop(self) -> None:
        """Stop advertising, drop every connection, power off, close the transport."""
        self._running = False
        if self._advertiser is not None:
            self._advertiser.cancel()
            await asyncio.gather(self._advertiser, return_exceptions=True)
        for session in list(self._sessions.values()):
            await self._disconnect(session)
        await self.device.stop_advertising()
        await self.device.power_off()
        if self._transport is not None:
            await self._transport.close()

    async def _advertise(self) -> None:
        advertising, scan_response = advertising_payloads(self.door_id)
        await self.device.start_advertising(
            advertising_type=AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE,
            advertising_data=advertising,
            scan_response_data=scan_response,
            advertising_interval_min=self._interval,
            advertising_interval_max=self._interval,
        )

    def _readvertise(self) -> None:
        """Advertise again (in a task) once the door is idle."""
        if not self._running or self._sessions:
            return

        async def advertise() -> None:
            try:
                await self._advertise()
            except Exception:
                logger.exception("door %s: cannot advertise", self.door_id.hex())

        self._advertiser = asyncio.get_running_loop().create_task(advertise())

    async def _disconnect(self, session: _Session) -> None:
        try:
            await session.connection.disconnect()
        except BaseBumbleError as error:  # already gone, or the controller refused
            logger.debug("disconnect of %s failed: %s", session.channel, error)
        self._end_session(session)

    # --- connections --------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        if connection.role != hci.Role.PERIPHERAL:
            return
        session = _Session(connection, Channel("ble", connection.handle))
        session.writer = asyncio.get_running_loop().create_task(self._write_loop(session))
        self._sessions[session.channel] = session
        connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: self._end_session(session))
        logger.info("door %s: phone connected on %s", self.door_id.hex(), session.channel)
        self._feed(Connected(session.channel))

    def _end_session(self, session: _Session) -> None:
        """Forget a closed connection (idempotent); the reassembler keeps its transfer."""
        if self._sessions.get(session.channel) is not session:
            return
        del self._sessions[session.channel]
        if session.writer is not None:
            session.writer.cancel()
        logger.info("door %s: %s closed", self.door_id.hex(), session.channel)
        self._feed(Disconnected(session.channel))
        self._readvertise()

    def _session_of(self, connection: Connection) -> _Session | None:
        session = self._sessions.get(Channel("ble", connection.handle))
        return session if session is not None and session.connection is connection else None

    def _on_tx_subscription(self, connection: Connection, notify: bool, _indicate: bool) -> None:
        session = self._session_of(connection)
        if session is None:
            return
        session.tx_enabled = notify
        if notify:
            held, session.held = session.held, []
            for frame in held:
                self._queue_frame(session, frame)

    def _on_ack_subscription(self, connection: Connection, notify: bool, _indicate: bool) -> None:
        session = self._session_of(connection)
        if session is not None and notify:
            self._queue_ack(session)

    # --- phone → lock -------------------------------------------------------------------

    def _on_rx_write(self, connection: Connection, value: bytes) -> None:
        """One segment from the phone. Never raises.

        A segment that arrives as its link closes still counts: the door's one
        reassembler keeps it for the resumed transfer (§7.1.3).
        """
        session = self._session_of(connection)
        channel = Channel("ble", connection.handle)
        try:
            frame = self._reassembler.receive(bytes(value))
        except ProtocolError as error:
            logger.debug("%s: segment refused: %s: %s", channel, type(error).__name__, error)
            self._queue_ack(session)
            return
        except Exception:
            logger.exception("%s: reassembler failed", channel)
            return
        if session is not None:
            session.segments_since_ack += 1
            if frame is not None or session.segments_since_ack == self._ack_every:
                self._queue_ack(session)
        if frame is not None:
            self._feed(FrameReceived(channel, frame))

    def _on_ack_write(self, connection: Connection, value: bytes) -> None:
        """The phone's ack of a ``tx`` transfer: decoded and logged. Never raises."""
        try:
            ack = SegmentAck.from_bytes(bytes(value))
        except ProtocolError as error:
            logger.debug("ack write refused: %s", error)
            return
        logger.debug("phone holds transfer %d up to %d", ack.transfer_id, ack.next_index)

    def _read_ack(self, _connection: Connection) -> bytes:
        ack = self._reassembler.ack()
        return b"" if ack is None else ack.to_bytes()

    # --- the core -----------------------------------------------------------------------

    def _feed(self, event: Event) -> None:
        """Run one event through the runtime and carry out its actions. Never raises."""
        try:
            actions = self.runtime.handle(event)
        except ProtocolError as error:
            logger.debug("event %s refused: %s", type(event).__name__, error)
            return
        except Exception:
            logger.exception("the lock failed on %s", type(event).__name__)
            return
        for action in actions:
            self._carry_out(action)

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, Send):
            self._send(action)
        elif isinstance(action, Energise):
            logger.info("door %s: energise %d s", self.door_id.hex(), action.seconds)
            if self._on_energise is not None:
                self._on_energise(action.seconds)
        else:
            logger.debug("door %s: %s", self.door_id.hex(), action)

    def _send(self, send: Send) -> None:
        session = self._sessions.get(send.channel)
        if session is None:
            logger.debug("dropping a frame for %s: not connected", send.channel)
        elif session.tx_enabled:
            self._queue_frame(session, send.frame)
        else:
            session.held.append(send.frame)

    # --- lock → phone -------------------------------------------------------------------

    def _queue_frame(self, session: _Session, frame: bytes) -> None:
        """Segment *frame* for the connection's current MTU and queue it on ``tx``."""
        self._next_transfer = (self._next_transfer + 1) % _U16
        try:
            segments = segment_frame(
                frame, mtu=session.connection.att_mtu, transfer_id=self._next_transfer
            )
        except ProtocolError as error:
            logger.error(
                "%s: cannot segment a %d-byte frame: %s", session.channel, len(frame), error
            )
            return
        for segment in segments:
            session.outbox.put_nowait((self._tx, segment))

    def _queue_ack(self, session: _Session | None) -> None:
        """Queue the door's resume point on ``ack`` (nothing before the first transfer)."""
        if session is None:
            return
        session.segments_since_ack = 0
        ack = self._reassembler.ack()
        if ack is not None:
            session.outbox.put_nowait((self._ack, ack.to_bytes()))

    async def _write_loop(self, session: _Session) -> None:
        """Send the session's notifications in order until the connection closes."""
        while True:
            characteristic, value = await session.outbox.get()
            try:
                await self.device.notify_subscriber(session.connection, characteristic, value)
            except Exception:
                logger.exception("%s: notification failed", session.channel)


def _device_name(door_id: bytes) -> str:
    return f"latch-{door_id[:4].hex()}"


def _address(address: str | hci.Address) -> hci.Address:
    return hci.Address(address) if isinstance(address, str) else address
