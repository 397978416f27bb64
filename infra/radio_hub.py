"""The virtual radio across processes: one :class:`~infra.radio.RadioLink` served over TCP.

Theory of operation: :mod:`infra.radio` is in-process only, since a bumble virtual
controller talks HCI to its host by method calls. A :class:`RadioHub` hosts one
``RadioLink`` (the air) in its own process and listens on TCP. Each TCP client is one
radio *chip*: the hub gives it a fresh :class:`~infra.radio.RadioController` on the
link, and the two speak HCI over the socket with H4 framing (a packet-type byte, then
the packet), exactly what bumble's ``tcp-client:HOST:PORT`` transport sends and
expects. So a lock served by ``door-controller run --ble tcp-client:127.0.0.1:6402``
and a phone's bumble central opened on the same transport string meet on one virtual
air, from different processes::

    python -m infra.radio_hub --port 6402        # prints "virtual radio listening on …"

Hostile or broken clients cannot take the hub down:

* Bytes that do not frame as H4 (an unknown packet-type byte) end that client: a
  stream that lost its framing cannot be resynchronised. Its controller leaves the air.
* A well-framed packet the controller cannot parse or handle is logged and dropped;
  the client stays connected.
* A client that stops reading (its unsent output grows beyond ``max_backlog`` bytes)
  is dropped instead of buffering without bound; at most ``max_clients`` connect.

When a client goes away (closed socket, crash, dropped) its controller *leaves the
air* as a powered-off chip would: advertising and scanning stop, every peer of its
connections sees the link time out (Disconnection Complete, reason Connection
Timeout), and the link forgets it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Final

from bumble import core, hci, ll
from bumble.transport.common import PacketParser

from .cli_args import port
from .radio import RadioController, RadioLink, RadioTiming

__all__ = ["DEFAULT_PORT", "HubClient", "RadioHub", "main"]

logger = logging.getLogger(__name__)

DEFAULT_PORT: Final = 6402
"""The hub's TCP port unless told otherwise (bumble's examples use 6402 for HCI over TCP)."""
DEFAULT_MAX_CLIENTS: Final = 256
DEFAULT_MAX_BACKLOG: Final = 1 << 20
"""Bytes a client may leave unread before the hub drops it."""


class HubClient(asyncio.Protocol):
    """One TCP client of the hub: H4-framed HCI to and from its own controller."""

    def __init__(self, hub: RadioHub, number: int) -> None:
        self.hub, self.number = hub, number
        self.controller: RadioController | None = None
        self._transport: asyncio.Transport | None = None
        self._parser = PacketParser(_FromHost(self))
        self.peer = "?"

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = str(transport.get_extra_info("peername"))
        if not self.hub.admit(self):
            logger.warning("radio hub: refused %s (%d clients)", self.peer, self.hub.max_clients)
            transport.close()
            return
        self.controller = RadioController(
            f"hub client {self.number}",
            link=self.hub.link,
            public_address=_public_address(self.number),
        )
        self.controller.host = _ToHost(self)
        logger.info("radio hub: client %d (%s) joined the air", self.number, self.peer)

    def data_received(self, data: bytes) -> None:
        if self.controller is None:
            return
        try:
            self._parser.feed_data(data)
        except core.InvalidPacketError as error:
            logger.warning(
                "radio hub: client %d sent unframed bytes (%s); dropped", self.number, error
            )
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._leave_air()

    # --- packets ----------------------------------------------------------------------------

    def to_controller(self, packet: bytes) -> None:
        """A framed HCI packet from the host: the controller handles it, or it is dropped."""
        controller = self.controller
        if controller is None:
            return
        try:
            controller.on_packet(packet)
        except Exception as error:  # hostile bytes must never stop the hub
            logger.warning(
                "radio hub: client %d: dropped a bad HCI packet %s…: %r",
                self.number,
                packet[:16].hex(),
                error,
            )

    def to_host(self, packet: bytes) -> None:
        """An HCI packet from the controller: write it to the socket (H4 framing)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(packet)
        if transport.get_write_buffer_size() > self.hub.max_backlog:
            logger.warning("radio hub: client %d does not read; dropped", self.number)
            self.close()

    def close(self) -> None:
        """Drop this client: close its socket and take its controller off the air."""
        if self._transport is not None:
            self._transport.abort()
        self._leave_air()

    def _leave_air(self) -> None:
        controller, self.controller = self.controller, None
        self.hub.forget(self)
        if controller is not None:
            _power_off(controller, self.hub.link)
            logger.info("radio hub: client %d (%s) left the air", self.number, self.peer)


class _FromHost:
    """The parser's sink: framed packets from the host go to the controller."""

    def __init__(self, client: HubClient) -> None:
        self._client = client

    def on_packet(self, packet: bytes) -> None:
        self._client.to_controller(packet)


class _ToHost:
    """The controller's host sink: its packets go to the socket."""

    def __init__(self, client: HubClient) -> None:
        self._client = client

    def on_packet(self, packet: bytes) -> None:
        self._client.to_host(packet)


def _public_address(number: int) -> str:
    """A distinct public address per client (the host sets its own random address)."""
    return f"F2:00:00:{(number >> 16) & 0xFF:02X}:{(number >> 8) & 0xFF:02X}:{number & 0xFF:02X}"


def _power_off(controller: RadioController, link: RadioLink) -> None:
    """Take *controller* off the air as if its chip lost power."""
    controller.le_legacy_advertiser.stop()
    for advertising_set in controller.advertising_sets.values():
        advertising_set.stop()
    controller.le_scan_enable = False
    controller.pending_le_connection = None
    for connection in list(controller.le_connections.values()):
        try:
            connection.send_ll_control_pdu(
                ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
            )
        except core.BaseBumbleError as error:  # the peer left already
            logger.debug("radio hub: no peer to tell of the lost link: %s", error)
    controller.le_connections.clear()
    controller.host = None
    if controller in link.controllers:
        link.remove_controller(controller)


class RadioHub:
    """A TCP server hosting one :class:`RadioLink`; each client is a controller on it."""

    def __init__(
        self,
        link: RadioLink | None = None,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
    ) -> None:
        if max_clients < 1 or max_backlog < 1:
            raise ValueError("max_clients and max_backlog must be at least 1")
        self.link = link if link is not None else RadioLink()
        self.max_clients, self.max_backlog = max_clients, max_backlog
        self._clients: set[HubClient] = set()
        self._count = 0
        self._server: asyncio.Server | None = None

    @property
    def clients(self) -> int:
        """How many clients are on the air now."""
        return len(self._clients)

    @property
    def port(self) -> int:
        """The TCP port the hub listens on (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the radio hub is not listening; call start() first")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        """Listen on *host*:*port* (``port=0``: any free port, see :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("the radio hub is already listening")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_client, host, port)

    async def close(self) -> None:
        """Stop listening and drop every client."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for client in list(self._clients):
            client.close()
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> RadioHub:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def admit(self, client: HubClient) -> bool:
        """Count *client* in, unless the hub is full."""
        if len(self._clients) >= self.max_clients:
            return False
        self._clients.add(client)
        return True

    def forget(self, client: HubClient) -> None:
        """Count *client* out (it left the air)."""
        self._clients.discard(client)

    def _new_client(self) -> HubClient:
        self._count += 1
        return HubClient(self, self._count)


# --- the command ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.radio_hub",
        description="Serve one virtual BLE radio over TCP (HCI, H4 framing) for bumble's "
        "tcp-client transport.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0: any)",
    )
    parser.add_argument(
        "--connection-interval",
        type=float,
        metavar="SECONDS",
        help="model BLE connection timing with this interval (default: no timing)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log clients joining")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    timing = None
    if args.connection_interval is not None:
        timing = RadioTiming(connection_interval=args.connection_interval)
    hub = RadioHub(RadioLink(timing=timing))
    await hub.start(args.host, args.port)
    print(f"virtual radio listening on {args.host}:{hub.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await hub.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infra.radio_hub``: serve the hub until interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as error:
        print(f"radio hub: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
