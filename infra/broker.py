"""MQTT brokers for tests, demos and simulations: use Mosquitto, or start amqtt in-process.

Theory of operation
-------------------
DESIGN.md ("Transports and real parts"): the real broker is Mosquitto, used whenever
it is reachable; the embedded default is an amqtt broker running in the caller's
event loop. :func:`pick_broker` makes that choice with one TCP connect (bounded by
``timeout``) to the preferred URL; :func:`start_embedded_broker` starts amqtt on
``127.0.0.1``. Both return objects that name what they are (:attr:`BrokerChoice.kind`)
so a test or a demo can say which broker it ran against.

An :class:`EmbeddedBroker` keeps everything in memory: stopping it drops every
session and retained message, exactly like a broker restart without persistence.
Starting a new one on the same port (``start_embedded_broker(old.port)``) is how
tests simulate "the broker went away and came back".

amqtt's default configuration loads ``BrokerSysPlugin``, which emits a
``DeprecationWarning`` (about ``psutil``) on every start, and loading plugins from
entry points is deprecated too. We pass an explicit plugin table (anonymous login
only) instead of filtering warnings, so nothing is raised or hidden.

This module depends on nothing of ours, so the cloud and the simulators can share it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from amqtt.broker import Broker  # type: ignore[import-untyped]

__all__ = [
    "DEFAULT_URL",
    "BrokerChoice",
    "BrokerKind",
    "EmbeddedBroker",
    "is_reachable",
    "parse_mqtt_url",
    "pick_broker",
    "start_embedded_broker",
]

DEFAULT_URL: Final = "mqtt://127.0.0.1:1883"
BrokerKind = Literal["mosquitto", "embedded amqtt"]
_LOCALHOST: Final = "127.0.0.1"
_MQTT_PORT: Final = 1883
_LISTENER: Final = "default"
_PLUGINS: Final[dict[str, dict[str, Any]]] = {
    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
}


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``mqtt://host[:port]`` → ``(host, port)``; the port defaults to 1883."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"expected mqtt://host[:port]; got {url!r}")
    return parts.hostname, parts.port or _MQTT_PORT


def _url(host: str, port: int) -> str:
    return f"mqtt://{host}:{port}"


@dataclass
class EmbeddedBroker:
    """An amqtt broker serving plain MQTT on ``host:port`` inside this event loop."""

    host: str
    port: int
    _broker: Any

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    async def stop(self) -> None:
        """Close the listener and drop every session and retained message."""
        await self._broker.shutdown()

    async def __aenter__(self) -> EmbeddedBroker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def start_embedded_broker(port: int = 0, *, host: str = _LOCALHOST) -> EmbeddedBroker:
    """Start amqtt on ``host:port`` (``port=0``: a free port, read back after binding)."""
    config = {
        "listeners": {_LISTENER: {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": _PLUGINS,
    }
    broker = Broker(config)
    _close_sockets_after_sessions(broker)
    await broker.start()
    return EmbeddedBroker(host, _bound_port(broker), broker)


def _close_sockets_after_sessions(broker: Any) -> None:
    """Close each client's socket when amqtt is done with it.

    amqtt 0.12 can finish a client's session without closing the socket (seen when a
    client disconnects while a QoS 1 delivery to it is in flight); the socket then
    lingers until garbage collection and raises a ``ResourceWarning``. The listener
    calls ``broker.stream_connected`` once per connection (bound when the listener
    starts), so wrapping it on the instance before :meth:`Broker.start` suffices.
    """
    serve = broker.stream_connected

    async def stream_connected(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        try:
            await serve(reader, writer, listener_name)
        finally:
            writer.close()

    broker.stream_connected = stream_connected


def _bound_port(broker: Any) -> int:
    """The port the listener really bound (amqtt keeps its servers in ``_servers``)."""
    server = broker._servers[_LISTENER].instance
    sockets = server.sockets
    if not sockets:
        raise RuntimeError("amqtt started without a listening socket")
    return int(sockets[0].getsockname()[1])


async def is_reachable(host: str, port: int, *, timeout: float = 0.5) -> bool:
    """Whether a TCP connect to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass(frozen=True)
class BrokerChoice:
    """The broker to use: its URL, what it is, and the embedded broker if we started one."""

    kind: BrokerKind
    url: str
    embedded: EmbeddedBroker | None = None

    @property
    def host(self) -> str:
        return parse_mqtt_url(self.url)[0]

    @property
    def port(self) -> int:
        return parse_mqtt_url(self.url)[1]

    def describe(self) -> str:
        """One line for logs and test reports, e.g. ``Mosquitto at mqtt://127.0.0.1:1883``."""
        name = "Mosquitto" if self.kind == "mosquitto" else "embedded amqtt broker"
        return f"{name} at {self.url}"

    async def close(self) -> None:
        """Stop the embedded broker, if this choice started one (Mosquitto is left alone)."""
        if self.embedded is not None:
            await self.embedded.stop()


async def pick_broker(preferred: str = DEFAULT_URL, *, timeout: float = 0.5) -> BrokerChoice:
    """Mosquitto at ``preferred`` if it accepts a TCP connection, else a new embedded broker."""
    host, port = parse_mqtt_url(preferred)
    if await is_reachable(host, port, timeout=timeout):
        return BrokerChoice("mosquitto", _url(host, port))
    embedded = await start_embedded_broker()
    return BrokerChoice("embedded amqtt", embedded.url, embedded)
