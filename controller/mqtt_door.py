"""The MQTT face of a lock: a :class:`~controller.runtime.LockRuntime` on an MQTT broker.

Theory of operation
-------------------
:class:`MqttDoor` is an adapter, not logic: it turns MQTT messages into core events
and carries out the actions that come back (``docs/protocol.md`` §10).

* **Connect.** One aiomqtt client per attempt, client id ``door-{door_id_hex}``,
  ``clean_session=False`` (a persistent session: the broker keeps our subscriptions
  and queues QoS 1 messages while we are away) and a last-will of ``offline``
  (QoS 1, retained) on the door's ``status`` topic, so a crash or a lost link is
  announced by the broker itself.
* **Announce.** After CONNACK: subscribe at QoS 1 to ``bundle``, ``ack``, ``time`` and
  the global ``cloud/keyrotation`` topic (again on every connect: harmless with a
  persistent session, and it restores everything after a broker that lost its
  state), publish ``online`` (retained) on ``status``, then feed ``Connected(MQTT)``
  to the runtime and publish what it returns: a retained HELLO carrying the list
  version, so the cloud can send what the door missed, and any unacknowledged
  AUDIT_BATCH. Only then is :attr:`MqttDoor.connected` set.
* **Serve.** Every message becomes ``FrameReceived(MQTT, payload)``; the runtime
  persists to flash first and returns the answers, published in order on the topic
  of their frame type (:func:`topic_for_frame`). An empty payload is not a frame
  but MQTT's way of clearing a retained topic; it is counted and ignored.
  Hostile bytes are the core's business: it answers with an ERROR frame and
  changes nothing. Should the core itself raise, the door reports an INTERNAL
  ERROR frame and keeps serving (one bad message must not take a door offline).
* **Reconnect.** Any :class:`aiomqtt.MqttError` (refused connect, lost link,
  broker restart) ends the session: ``Disconnected(MQTT)`` goes to the runtime and
  the door waits ``Backoff.delay`` — exponential, capped, with injected jitter —
  before the next attempt. The delay resets after a session that came up.
* **Timers.** The core's ``next_deadline()`` is a reading of the runtime's own
  clock; the door sleeps ``deadline - runtime.clock()`` on the event loop's clock
  (``asyncio.timeout``) and then calls ``handle_timeout()``. Nothing here reads
  ``time.monotonic()`` or the wall clock.
* **Stop.** :meth:`MqttDoor.stop` disconnects cleanly (the broker then discards the
  will). Pass ``announce_offline=True`` to publish ``offline`` first; otherwise the
  retained status keeps saying ``online`` after a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random as _random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiomqtt

from infra.backoff import Backoff
from protocol import ErrorCode, ErrorMessage, MessageType
from protocol.transport import KEY_ROTATION_TOPIC, door_topic

from .events import (
    MQTT,
    Action,
    Connected,
    Disconnected,
    Energise,
    Event,
    FrameReceived,
    Send,
)
from .runtime import LockRuntime

__all__ = ["Backoff", "DoorCounters", "MqttDoor", "topic_for_frame"]

log = logging.getLogger(__name__)

QOS: Final = 1
ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
_INBOUND_LEAVES: Final = ("bundle", "ack", "time")
_LEAF_BY_TYPE: Final[dict[int, str]] = {
    MessageType.HELLO: "hello",
    MessageType.RECEIPT: "receipt",
    MessageType.AUDIT_BATCH: "audit",
    MessageType.ERROR: "error",
}
_TYPE_OFFSET: Final = 3  # magic (2) | version (1) | type (1): §2.1
_CANCEL_RETRY_S: Final = 0.1
_NO_DELAY: Final = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""Nagle off: a PUBACK followed by an answer must not wait for the broker's delayed ACK."""


def topic_for_frame(door_id: bytes, frame: bytes) -> str | None:
    """The §10 topic a door publishes ``frame`` on, by its type byte (``None``: not on MQTT)."""
    if len(frame) <= _TYPE_OFFSET:
        return None
    leaf = _LEAF_BY_TYPE.get(frame[_TYPE_OFFSET])
    return None if leaf is None else door_topic(door_id, leaf)


@dataclass
class DoorCounters:
    """What the door has done, for tests, dashboards and the simulator's report."""

    messages_in: int = 0
    messages_out: int = 0
    ignored: int = 0
    """Inbound messages that carried no frame (empty payloads), or came on a topic the door
    did not subscribe to (a broker that leaks other topics' retained messages: amqtt 0.12)."""
    dropped: int = 0
    """Frames the core wanted to send while the door was offline."""
    connects: int = 0
    failures: int = 0
    """Sessions that failed or were lost (each one is followed by a backoff pause)."""
    internal_errors: int = 0
    last_error: BaseException | None = None


class MqttDoor:
    """Runs ``runtime`` against the broker at ``host:port`` until :meth:`stop`."""

    def __init__(
        self,
        runtime: LockRuntime,
        *,
        host: str,
        port: int = 1883,
        on_energise: Callable[[int], object] | None = None,
        on_action: Callable[[Action], object] | None = None,
        backoff: Backoff | None = None,
        random: Callable[[], float] = _random.random,
        keepalive: int = 30,
        timeout: float = 10.0,
        key_rotation_topic: str = KEY_ROTATION_TOPIC,
    ) -> None:
        self.runtime = runtime
        self.host, self.port = host, port
        self.on_energise, self.on_action = on_energise, on_action
        self.backoff = backoff or Backoff()
        self._random, self._keepalive, self._timeout = random, keepalive, timeout
        self.key_rotation_topic = key_rotation_topic
        self.connected = asyncio.Event()
        """Set while a session is up (after HELLO went out)."""
        self.disconnected = asyncio.Event()
        """Set while no session is up: the complement of :attr:`connected`."""
        self.disconnected.set()
        self.counters = DoorCounters()
        self._client: aiomqtt.Client | None = None
        self._session_open = False
        self._stopping = asyncio.Event()
        self._timers_changed = asyncio.Event()
        self._session_task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    # --- topics ------------------------------------------------------------------------

    @property
    def door_id(self) -> bytes:
        return self.runtime.controller.door_id

    @property
    def client_id(self) -> str:
        return f"door-{self.door_id.hex()}"

    @property
    def status_topic(self) -> str:
        return door_topic(self.door_id, "status")

    def subscriptions(self) -> list[tuple[str, int]]:
        """The topics this door listens on (§10), all at QoS 1."""
        topics = [door_topic(self.door_id, leaf) for leaf in _INBOUND_LEAVES]
        return [(topic, QOS) for topic in [*topics, self.key_rotation_topic]]

    @functools.cached_property
    def _inbound(self) -> frozenset[str]:
        return frozenset(topic for topic, _ in self.subscriptions())

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve and reconnect with backoff until :meth:`stop` is called."""
        if self._session_task is not None or self._done.is_set():
            raise RuntimeError("MqttDoor.run() may be called once")
        timers = asyncio.create_task(self._drive_timers(), name=f"{self.client_id} timers")
        try:
            await self._reconnect_loop()
        finally:
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers
            self._done.set()

    async def stop(self, *, announce_offline: bool = False) -> None:
        """Disconnect cleanly and make :meth:`run` return.

        A clean disconnect makes the broker discard the will, so the retained status
        stays ``online`` unless ``announce_offline`` publishes ``offline`` first.
        """
        self._stopping.set()
        if announce_offline:
            with contextlib.suppress(aiomqtt.MqttError):  # a lost link: the will says it
                await self._publish_raw(self.status_topic, OFFLINE, retain=True)
        task = self._session_task
        while task is not None and not task.done():
            task.cancel()  # again if aiomqtt swallowed it (Python 3.11's wait_for can)
            await asyncio.wait({task}, timeout=_CANCEL_RETRY_S)
        if task is not None:
            await self._done.wait()

    async def feed(self, event: Event) -> None:
        """Hand a local event (card tap, key press) to the runtime and carry out its actions."""
        await self._dispatch_quietly(self._handle(event))

    async def _reconnect_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            came_up = await self._one_session()
            if self._stopping.is_set():
                return
            failures = 0 if came_up else failures + 1
            await self._pause(self.backoff.delay(failures, self._random))

    async def _one_session(self) -> bool:
        """Run one connection to its end; return whether it came up."""
        self._session_task = asyncio.create_task(self._session(), name=self.client_id)
        connects = self.counters.connects
        try:
            await self._session_task
        except aiomqtt.MqttError as exc:
            self.counters.failures += 1
            self.counters.last_error = exc
            log.info("%s: MQTT session ended: %s", self.client_id, exc)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # run() itself was cancelled, not just this session by stop()
        return self.counters.connects > connects

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` on the loop clock, waking early if :meth:`stop` is called."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # --- one session -------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            clean_session=False,
            will=aiomqtt.Will(self.status_topic, OFFLINE, qos=QOS, retain=True),
            keepalive=self._keepalive,
            timeout=self._timeout,
            socket_options=[_NO_DELAY],
        )

    async def _session(self) -> None:
        async with self._new_client() as client:
            self._client = client
            try:
                await self._announce(client)
                async for message in client.messages:
                    await self._on_message(message)
            finally:
                self._went_down()

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Subscribe, say ``online``, then publish HELLO and pending audit (§10)."""
        granted = await client.subscribe(self.subscriptions())
        _check_granted(granted)
        await client.publish(self.status_topic, ONLINE, qos=QOS, retain=True)
        self.counters.messages_out += 1
        self._session_open = True
        await self._dispatch(self._handle(Connected(MQTT)))
        self.counters.connects += 1
        self.disconnected.clear()
        self.connected.set()
        log.info("%s: connected to %s:%d", self.client_id, self.host, self.port)

    def _went_down(self) -> None:
        self._client = None
        self.connected.clear()
        self.disconnected.set()
        if self._session_open:
            self._session_open = False
            self._dispatch_offline(self._handle(Disconnected(MQTT)))

    async def _on_message(self, message: aiomqtt.Message) -> None:
        self.counters.messages_in += 1
        payload = message.payload
        if not isinstance(payload, bytes | bytearray) or not payload:
            self.counters.ignored += 1  # an empty payload clears a retained topic
            return
        if message.topic.value not in self._inbound:
            self.counters.ignored += 1  # not a topic of ours: never answer for another door
            return
        await self._dispatch(self._handle(FrameReceived(MQTT, bytes(payload))))

    # --- actions -----------------------------------------------------------------------

    def _handle(self, event: Event) -> list[Action]:
        """Feed the runtime; a core exception becomes an INTERNAL error frame."""
        try:
            actions = self.runtime.handle(event)
        except Exception as exc:
            log.exception("%s: controller failed on %r", self.client_id, type(event).__name__)
            self.counters.internal_errors += 1
            self.counters.last_error = exc
            actions = [Send(MQTT, _internal_error(event))]
        self._timers_changed.set()
        return actions

    async def _dispatch(self, actions: Sequence[Action]) -> None:
        """Carry out actions in order: publish MQTT sends, energise, hand on the rest."""
        for action in actions:
            if isinstance(action, Send) and action.channel == MQTT:
                await self._send(action)
            else:
                self._local(action)

    async def _dispatch_quietly(self, actions: Sequence[Action]) -> None:
        """:meth:`_dispatch` outside the session task: a lost link is the session's to handle."""
        try:
            await self._dispatch(actions)
        except aiomqtt.MqttError as exc:
            self.counters.dropped += 1
            self.counters.last_error = exc

    def _dispatch_offline(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Send) and action.channel == MQTT:
                self.counters.dropped += 1
            else:
                self._local(action)

    def _local(self, action: Action) -> None:
        if isinstance(action, Energise):
            if self.on_energise is not None:
                self.on_energise(action.seconds)
        elif self.on_action is not None:
            self.on_action(action)

    async def _send(self, action: Send) -> None:
        topic = topic_for_frame(self.door_id, action.frame)
        if topic is None:
            log.warning(
                "%s: no MQTT topic for frame type %r",
                self.client_id,
                action.frame[_TYPE_OFFSET : _TYPE_OFFSET + 1],
            )
            self.counters.dropped += 1
            return
        await self._publish_raw(topic, action.frame, retain=action.retain)

    async def _publish_raw(self, topic: str, payload: bytes, *, retain: bool) -> None:
        client = self._client
        if client is None:
            self.counters.dropped += 1
            return
        await client.publish(topic, payload, qos=QOS, retain=retain)
        self.counters.messages_out += 1

    # --- timers ------------------------------------------------------------------------

    async def _drive_timers(self) -> None:
        """Call ``handle_timeout`` when the core's next deadline passes (runtime clock)."""
        while True:
            self._timers_changed.clear()
            delay = self._until_deadline()
            if delay is not None and delay <= 0:
                await self._on_deadline()
                delay = self._until_deadline()
                if delay is not None and delay <= 0:
                    log.warning("%s: a timer stays due after handle_timeout", self.client_id)
                    delay = None  # wait for the next event rather than spin
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timers_changed.wait()

    def _until_deadline(self) -> float | None:
        """Seconds until the core's next deadline on the runtime's clock (``None``: none)."""
        deadline = self.runtime.next_deadline()
        return None if deadline is None else deadline - self.runtime.clock()

    async def _on_deadline(self) -> None:
        try:
            actions = self.runtime.handle_timeout()
        except Exception as exc:
            log.exception("%s: controller failed in handle_timeout", self.client_id)
            self.counters.internal_errors += 1
            self.counters.last_error = exc
            actions = []
        await self._dispatch_quietly(actions)


def _check_granted(granted: Sequence[Any]) -> None:
    """Raise if the broker refused any subscription (SUBACK 0x80)."""
    for code in granted:
        failed = code.is_failure if hasattr(code, "is_failure") else int(code) >= 0x80
        if failed:
            raise aiomqtt.MqttError(f"broker refused a subscription: {granted!r}")


def _internal_error(event: Event) -> bytes:
    """An ERROR frame (§4.4, code INTERNAL) about the frame the core failed on."""
    data = event.data if isinstance(event, FrameReceived) else b""
    about = data[_TYPE_OFFSET] if len(data) > _TYPE_OFFSET else 0
    message = ErrorMessage(code=ErrorCode.INTERNAL, about_type=about, detail="internal error")
    return message.to_frame()
