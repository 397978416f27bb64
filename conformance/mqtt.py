"""The MQTT adapter: a lock at a door id on a broker URL, reached as the cloud reaches it.

Theory of operation: :class:`MqttLock` drives the reference lock's real MQTT face
(:class:`controller.mqtt_door.MqttDoor`, aiomqtt) through a broker, as the cloud does
(``docs/protocol.md`` §10). The suite's side is a :class:`CloudLink`: aiomqtt clients
that publish each frame on the door topic of its type (``bundle``, ``ack``, ``time``;
KEY_ROTATION on a rotation topic private to this adapter) and collect what the door
publishes on ``hello``, ``receipt``, ``audit`` and ``error``. Frames on the ``mqtt``
channel take that path; everything else (BLE channels and segments, the card reader,
the keypad, the clock, observation, power) goes to the same lock through
:class:`~conformance.inprocess.InProcessLock`, standing in for a bench's side channel.

The door is kept online from provisioning on (an internet door is always connected):
``connect(mqtt)`` makes it reconnect (its outputs are the new session's HELLO and
pending audit), ``disconnect(mqtt)`` takes it off the broker, and the next frame on
``mqtt`` brings it back first, quietly.

A stimulus is over when the door has taken every message published to it and the link
has received every frame the door asked to publish: the door's runtime is wrapped in a
:class:`_Tally` that counts them, so nothing depends on a settle time. Everything runs
on one asyncio loop in a background thread; each sync call waits with a timeout.

Two pitfalls of §10 are handled here. A door's session is persistent (client id
``door-{id}``, ``clean_session=False``), and the suite gives every provisioning the same
door id: so each provisioning first ends that session with a clean-session connect and
clears anything retained on the door's inbound topics, and the link's clients use fresh
client ids and clean sessions. HELLO is retained: a copy from an earlier connect arrives
with the retain flag when the link subscribes, so retained messages are ignored (a
broker forwards live messages to existing subscribers without the flag); and the
retained HELLO is cleared before each door connect, for brokers that hand it to the
door itself (amqtt 0.12).

An armed power cut strikes inside the door while it handles a frame: the door's task
ends with :class:`controller.storage.PowerLost`, the adapter reports ``power_lost`` and
the lock is off until :meth:`MqttLock.restart` boots it and puts a new door online.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Callable
from typing import Final, TypeVar

import aiomqtt

from controller.events import MQTT as CONTROLLER_MQTT
from controller.events import Action, Event, Send
from controller.mqtt_door import MqttDoor, topic_for_frame
from controller.runtime import LockRuntime
from controller.storage import PowerLost
from infra.broker import parse_mqtt_url
from protocol import MessageType
from protocol.transport import TOPIC_PREFIX, door_topic

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

__all__ = ["CloudLink", "MqttLock", "inbound_topic"]

_T = TypeVar("_T")
QOS: Final = 1
MQTT: Final = Channel("mqtt")
OUTBOUND_LEAVES: Final = ("hello", "receipt", "audit", "error")
"""What a door publishes (§10); the link subscribes to these."""
_INBOUND_LEAVES: Final = ("bundle", "ack", "time")
_LEAF_BY_TYPE: Final[dict[int, str]] = {
    MessageType.BUNDLE: "bundle",
    MessageType.AUDIT_ACK: "ack",
    MessageType.TIME_SYNC: "time",
}
_TYPE_OFFSET: Final = 3  # magic (2) | version (1) | type (1): §2.1
_POLL_S: Final = 0.001
_NO_DELAY: Final = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""Nagle off: a publish must not wait for the broker's delayed ACK of the last one."""


def inbound_topic(door_id: bytes, frame: bytes, rotation_topic: str) -> str:
    """The topic the cloud publishes ``frame`` on (§10), by its type byte.

    KEY_ROTATION goes to ``rotation_topic``; bytes of any other type, or too short to
    have one, go to ``bundle``, where a hostile relay or broker would put them.
    """
    kind = frame[_TYPE_OFFSET] if len(frame) > _TYPE_OFFSET else -1
    if kind == MessageType.KEY_ROTATION:
        return rotation_topic
    return door_topic(door_id, _LEAF_BY_TYPE.get(kind, "bundle"))


class _Tally(LockRuntime):
    """The lock's runtime as the door sees it, counting the frames it asks to publish."""

    def __init__(self, inner: LockRuntime) -> None:
        super().__init__(inner.controller, inner.flash, inner.clock)
        self._inner = inner
        self.frames = 0
        self.power_lost = False

    def handle(self, event: Event) -> list[Action]:
        return self._count(lambda: self._inner.handle(event))

    def handle_timeout(self) -> list[Action]:
        return self._count(self._inner.handle_timeout)

    def next_deadline(self) -> float | None:
        return self._inner.next_deadline()

    def _count(self, step: Callable[[], list[Action]]) -> list[Action]:
        try:
            actions = step()
        except PowerLost:
            self.power_lost = True  # the door's task ends with it: the lock is off
            raise
        door_id = self.controller.door_id
        self.frames += sum(
            1
            for a in actions
            if isinstance(a, Send)
            and a.channel == CONTROLLER_MQTT
            and topic_for_frame(door_id, a.frame) is not None
        )
        return actions


class CloudLink:
    """The suite's side of the broker for one provisioning: publishes to a door, collects
    what it publishes.

    Two clients, each with a fresh client id and a clean session, so nothing queued for an
    earlier link arrives: one publishes, one collects. (With one client, the broker's
    PUBACK and its next PUBLISH to us would be two small writes in a row, and a broker
    without ``TCP_NODELAY`` holds the second until our delayed ACK, 40 ms later.)
    Retained and empty messages are ignored: a stale HELLO, a cleared topic (§10).
    """

    def __init__(self, host: str, port: int, door_id: bytes, *, timeout: float) -> None:
        self.door_id = door_id
        self.publisher, self.collector = (
            aiomqtt.Client(
                host,
                port,
                identifier=f"lk1-conformance-{role}-{uuid.uuid4().hex}",
                clean_session=True,
                timeout=timeout,
                socket_options=[_NO_DELAY],
            )
            for role in ("pub", "sub")
        )
        self.frames: list[bytes] = []
        self.received = 0
        """Frames collected since the link came up (``frames`` is emptied by :meth:`take`)."""
        self.ignored = 0
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.collector.__aenter__()
        topics = [(door_topic(self.door_id, leaf), QOS) for leaf in OUTBOUND_LEAVES]
        await self.collector.subscribe(topics)
        self._listener = asyncio.create_task(self._listen(), name="conformance link")
        await self.publisher.__aenter__()

    async def _listen(self) -> None:
        async for message in self.collector.messages:
            payload = message.payload
            if message.retain or not isinstance(payload, bytes | bytearray) or not payload:
                self.ignored += 1  # §10: a retained HELLO is from an earlier connect
                continue
            self.frames.append(bytes(payload))
            self.received += 1

    async def publish(self, topic: str, frame: bytes) -> None:
        """Publish one frame, QoS 1, never retained (a retained frame would reach later
        sessions and provisionings)."""
        await self.publisher.publish(topic, frame, qos=QOS, retain=False)

    async def clear_retained(self, leaf: str) -> None:
        """Delete what is retained on the door's ``leaf`` topic (an empty retained message)."""
        await self.publisher.publish(door_topic(self.door_id, leaf), b"", qos=QOS, retain=True)

    def take(self) -> list[bytes]:
        frames, self.frames = self.frames, []
        return frames

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._listener
        for client in (self.publisher, self.collector):
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)


async def end_door_session(host: str, port: int, door_id: bytes, *, timeout: float) -> None:
    """End the door's persistent session and clear its inbound topics' retained messages.

    Connecting with the door's client id and a clean session makes the broker discard
    the session (subscriptions and queued messages) of an earlier provisioning (§10).
    """
    client = aiomqtt.Client(
        host, port, identifier=f"door-{door_id.hex()}", clean_session=True, timeout=timeout
    )
    async with client:
        for leaf in _INBOUND_LEAVES:
            await client.publish(door_topic(door_id, leaf), b"", qos=QOS, retain=True)


async def _drop_socket(client: aiomqtt.Client) -> None:
    """Close the socket of a client whose connect failed after TCP came up.

    aiomqtt 2.5 leaves it open when no CONNACK arrives (a server that is not a broker);
    closing it through paho runs aiomqtt's own socket-close hook, which ends its tasks.
    """
    paho = getattr(client, "_client", None)
    if paho is not None and paho.socket() is not None:
        with contextlib.suppress(Exception):
            paho._sock_close()
        await asyncio.sleep(0)


class MqttLock(FacedLock):
    """The reference lock on the broker at ``url``, judged through its MQTT face."""

    def __init__(
        self,
        url: str,
        inner: InProcessLock | None = None,
        *,
        timeout: float = 10.0,
        reach_timeout: float = 2.0,
    ) -> None:
        try:
            self.host, self.port = parse_mqtt_url(url)
        except ValueError as exc:
            raise AdapterError(str(exc)) from None
        super().__init__(inner, timeout=timeout)
        self.url = url
        self.rotation_topic = f"{TOPIC_PREFIX}conformance/{uuid.uuid4().hex}/keyrotation"
        """Private to this adapter: the global ``cloud/keyrotation`` is shared (§10)."""
        self._link: CloudLink | None = None
        self._door: MqttDoor | None = None
        self._tally: _Tally | None = None
        self._door_task: asyncio.Task[None] | None = None
        self._sent = 0
        """Messages published to the current door."""
        self._received = 0
        """``CloudLink.received`` when the current door started."""
        self._energised: list[int] = []
        self._off = False
        self._check_reachable(reach_timeout)

    def _check_reachable(self, reach_timeout: float) -> None:
        """One MQTT connect, so a wrong URL is one clear error rather than a run of ERRORs."""

        async def probe() -> str | None:
            client = aiomqtt.Client(
                self.host,
                self.port,
                identifier=f"lk1-conformance-probe-{uuid.uuid4().hex}",
                clean_session=True,
                timeout=reach_timeout,
            )
            try:
                async with client:
                    return None
            except (aiomqtt.MqttError, OSError) as exc:
                await _drop_socket(client)
                return str(exc) or type(exc).__name__

        why = self._run(probe(), timeout=reach_timeout + 1.0)
        if why is not None:
            self.close()
            raise AdapterError(
                f"cannot reach an MQTT broker at {self.url} ({why}):"
                " start one there (Mosquitto) or give another --mqtt URL"
            )

    # --- the loop thread -----------------------------------------------------------------

    face = "MQTT"

    def _face_error(self, exc: Exception) -> AdapterError | None:
        if isinstance(exc, aiomqtt.MqttError):
            return AdapterError(f"MQTT ({self.url}): {exc}")
        return None

    # --- the door on the broker ----------------------------------------------------------

    async def _start_door(self) -> Outputs:
        """Put a door serving the lock's runtime online; return its HELLO and audit.

        The last retained HELLO is cleared first: amqtt 0.12 hands every connecting client
        the retained messages of every topic anyone subscribes to, so the door would get its
        own old HELLO as a frame (Mosquitto does not; there this changes nothing).
        """
        if self._link is not None:
            await self._link.clear_retained("hello")
        self._tally = _Tally(self._inner.runtime)
        self._door = MqttDoor(
            self._tally,
            host=self.host,
            port=self.port,
            on_energise=self._on_energise,
            timeout=self._timeout,
            key_rotation_topic=self.rotation_topic,
        )
        self._sent = 0
        self._received = self._link.received if self._link is not None else 0
        self._door_task = asyncio.create_task(self._door.run(), name="conformance door")
        connected = asyncio.create_task(self._door.connected.wait())
        await asyncio.wait({connected, self._door_task}, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        if self._door_task.done():
            return self._collected()  # raises, or reports a power cut
        return await self._settled()

    def _on_energise(self, seconds: int) -> None:
        self._energised.append(seconds)

    async def _stop_door(self) -> Outputs:
        """Take the door off the broker (a clean disconnect); return what it sent last."""
        if self._door_ended():
            return self._collected()  # it already went down (a power cut)
        door, self._door, self._tally, self._door_task = self._door, None, None, None
        if door is not None:
            await door.stop()
        return self._collected()

    async def _online(self) -> MqttDoor:
        """The door, brought back (its reconnect's outputs dropped) if it was taken off."""
        if self._off:
            raise AdapterError("the lock is powered off; restart it first")
        if self._door is None:
            await self._start_door()
        assert self._door is not None
        return self._door

    async def _settled(self) -> Outputs:
        """Wait until the door took every frame sent to it and the link holds every frame
        it asked to publish (or its power failed); return what was collected."""
        door, tally, link = self._door, self._tally, self._link
        assert door is not None and tally is not None and link is not None
        while not tally.power_lost and not self._door_ended():
            expected = tally.frames + door.counters.internal_errors
            received = link.received - self._received
            if door.counters.messages_in >= self._sent and received >= expected:
                break
            await asyncio.sleep(_POLL_S)
        if self._door_task is not None and tally.power_lost:
            await asyncio.wait({self._door_task})  # PowerLost is on its way out of the door
        return self._collected()

    def _door_ended(self) -> bool:
        task = self._door_task
        return task is not None and task.done()

    def _collected(self) -> Outputs:
        outputs = Outputs(energised=self._energised)
        self._energised = []
        if self._link is not None:
            outputs.frames = [SentFrame(MQTT, frame) for frame in self._link.take()]
        if self._door_ended():
            fault = self._door_fault()
            self._door, self._tally, self._door_task = None, None, None
            if not isinstance(fault, PowerLost):
                raise AdapterError(f"the MQTT door stopped: {fault!r}")
            outputs.power_lost = True
            if not self._off:
                self._inner.power_cut()
                self._off = True
        return outputs

    def _door_fault(self) -> BaseException | None:
        task = self._door_task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def _relink(self, door_id: bytes) -> None:
        """A fresh link and a fresh door session for a new provisioning."""
        await self._stop_door()
        if self._link is not None:
            await self._link.close()
            self._link = None
        await end_door_session(self.host, self.port, door_id, timeout=self._timeout)
        link = CloudLink(self.host, self.port, door_id, timeout=self._timeout)
        await link.start()
        self._link = link

    # --- LockUnderTest -------------------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> LutRegistration:
        async def provision() -> LutRegistration:
            await self._relink(request.door_id)
            registration = self._inner.provision(request)
            self._off = False
            await self._start_door()
            return registration

        return self._run(provision())

    def connect(self, channel: Channel) -> Outputs:
        if channel.transport != "mqtt":
            return self._inner_call(lambda: self._inner.connect(channel))

        async def reconnect() -> Outputs:
            if self._off:
                raise AdapterError("the lock is powered off; restart it first")
            outputs = await self._stop_door()
            return outputs + await self._start_door()

        return self._run(reconnect())

    def disconnect(self, channel: Channel) -> Outputs:
        if channel.transport != "mqtt":
            return self._inner_call(lambda: self._inner.disconnect(channel))
        return self._run(self._stop_door())

    def deliver(self, channel: Channel, frame: bytes) -> Outputs:
        if channel.transport != "mqtt":
            return self._inner_call(lambda: self._inner.deliver(channel, frame))

        async def deliver() -> Outputs:
            door = await self._online()
            assert self._link is not None
            self._sent += 1
            await self._link.publish(inbound_topic(door.door_id, frame, self.rotation_topic), frame)
            return await self._settled()

        return self._run(deliver())

    def deliver_segment(self, channel: Channel, segment: bytes) -> Outputs:
        return self._inner_call(lambda: self._inner.deliver_segment(channel, segment))

    def power_cut(self) -> None:
        async def cut() -> None:
            await self._stop_door()
            self._inner.power_cut()
            self._off = True

        self._run(cut())

    def arm_power_cut(self, at_write: int, landed: float = 0.5) -> None:
        self._inner_call(lambda: self._inner.arm_power_cut(at_write, landed))

    def restart(self) -> Outputs:
        async def restart() -> Outputs:
            await self._stop_door()
            outputs = self._inner.restart()
            self._off = False
            return outputs + await self._start_door()

        return self._run(restart())

    def close(self) -> None:
        async def shutdown() -> None:
            await self._stop_door()
            if self._link is not None:
                # Leave nothing behind: the door's retained HELLO and status would reach
                # every later subscriber of the broker (a cloud bridge, another run).
                for leaf in ("hello", "status"):
                    await self._link.clear_retained(leaf)
                await self._link.close()
                self._link = None

        if self._loop.is_running():
            try:
                self._run(shutdown())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()
