"""The cloud's MQTT side: publish the outbox, ingest receipts, audit batches and HELLOs.

Theory of operation
-------------------
:class:`MqttBridge` is the cloud's adapter to the broker (``docs/protocol.md`` §10).
Everything it must not lose is in the database, so cloud processes may run side by side.

* **Outbox → broker.** A change writes its frames to :class:`~cloud.models.MqttOutbox`
  in its own transaction (:mod:`cloud.sync`). The bridge publishes unsent rows in id
  order at QoS 1 with each row's retain flag and, once the broker acknowledged them,
  marks them sent in a new transaction (sent rows beyond the newest ``keep_sent`` are
  deleted then, so the table does not grow forever): a crash between commit and publish loses
  nothing (the next bridge publishes the rows; doors apply duplicates idempotently,
  §6.2.2). It drains on connect, on :meth:`MqttBridge.notify` (the API calls it after a
  commit; any thread) and every ``poll_interval`` s for other processes' changes. On
  PostgreSQL a drain holds an advisory lock (a cloud that finds it taken looks again
  shortly): clouds drain one at a time, so no retained bundle is replaced by an older one.
* **Broker → database.** QoS 1 subscriptions to every door's ``receipt``, ``audit`` and
  ``hello``; as ``$share/{group}/…`` (one cloud gets each message) where the broker
  supports it (Mosquitto 2 does, amqtt does not: :meth:`MqttBridge._probe_shared`), else
  plain, every cloud getting everything. Ingestion is idempotent either way: receipts
  only move a synced version forward, audit events are deduplicated by sequence number,
  a HELLO records health and queues frames a door may receive twice.
* **A batch, one transaction.** A message is decoded (§2.3) and handled by
  :func:`ingest_receipt`, :func:`ingest_audit` or :func:`record_hello` on a
  :class:`~cloud.service.CloudService`, in the bridge's one database thread (the event
  loop keeps serving the broker). What arrived while the last batch was being ingested
  (up to ``ingest_batch`` messages, in arrival order) shares one transaction: a fan-out's
  1,000 receipts commit in a few transactions, not 1,000. If any message of a batch
  fails, the batch is rolled back and each message runs again in its own transaction, so
  one bad message costs no other. A collision with another cloud's transaction is
  retried. Forged (bad lock signature) and malformed frames are logged, counted and
  ignored; no error ends the loop.
* **Answers.** An audit batch gets a cloud-signed AUDIT_ACK on ``ack`` after its events
  are committed (a KEY_ROTATED event in it raises the door's key epoch:
  :meth:`CloudService.audit`). A HELLO behind the door's list version queues a catch-up
  bundle from the version announced; one behind on key epoch queues the missing
  KEY_ROTATIONs in order. A live HELLO whose ``lock_time`` is off from the bridge's clock
  by more than ``BridgeConfig.time_sync_tolerance_s`` queues a TIME_SYNC bound to that
  HELLO's challenge (§6.6, §10) on the door's ``time`` topic, not retained: a bound sync is
  good for one challenge only, so a retained copy would only be refused later. It is
  queued after any rotations, so a lock behind on epoch trusts its signing key by then.
  A retained HELLO (delivered on subscribe, maybe old) never moves ``last_seen`` and never
  gets a TIME_SYNC: the age of its ``lock_time`` is unknown, so it says nothing about the
  lock's clock now.
* **Reconnect.** An :class:`aiomqtt.MqttError` ends the session; the bridge waits an
  exponential, capped, jittered delay, connects again and drains the outbox.

HELLO is unsigned (§4.1): door health is as trustworthy as the broker, and a forged
HELLO can only cause a sealed bundle or a rotation to be sent again, or a TIME_SYNC bound
to a challenge the lock never issued (the lock refuses it as STALE; it costs a sequence
number). With plain subscriptions every cloud answers a HELLO, so a drifted door gets one
TIME_SYNC per cloud; it takes the first and refuses the others (the challenge is used).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random as _random
import re
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import aiomqtt
from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from infra.backoff import Backoff
from infra.broker import parse_mqtt_url
from protocol import (
    AuditAck,
    AuthenticationError,
    MessageType,
    ProtocolError,
    Receipt,
    ReceiptStatus,
)
from protocol.frame import decode_frame
from protocol.transport import KEY_ROTATION_TOPIC, TOPIC_PREFIX, door_topic

from .db import make_engine, session_factory
from .errors import CloudError
from .models import Door, DoorVersion
from .mqtt_ingest import (
    HelloOutcome,
    OutboxRow,
    claim_unsent,
    ingest_audit,
    ingest_receipt,
    make_durable,
    mark_sent,
    queue_key_rotation,
    record_hello,
)
from .service import CloudService
from .settings import CloudSettings
from .sync import BundleCache
from .time_sync import MIN_CORRECTION_S

__all__ = [
    "BridgeConfig",
    "BridgeCounters",
    "HelloOutcome",
    "MqttBridge",
    "OutboxRow",
    "claim_unsent",
    "ingest_audit",
    "ingest_receipt",
    "queue_key_rotation",
    "record_hello",
]

log = logging.getLogger(__name__)

QOS: Final = 1
INBOUND_LEAVES: Final = ("receipt", "audit", "hello")
_TYPES: Final = (MessageType.RECEIPT, MessageType.AUDIT_BATCH, MessageType.HELLO)
_EXPECTED_TYPE: Final = dict(zip(INBOUND_LEAVES, _TYPES, strict=True))
_TOPIC: Final = re.compile(  # latchsim/v1/doors/{door id}/{inbound leaf}
    "^" + re.escape(TOPIC_PREFIX) + r"doors/([0-9a-f]{32})/(" + "|".join(INBOUND_LEAVES) + ")$"
)
_TRANSACTION_ATTEMPTS: Final = 3
_NO_DELAY: Final = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
_CANCEL_RETRY_S: Final = 0.1
_LOCK_RETRY_S: Final = 0.05

T = TypeVar("T")


# --- the bridge ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BridgeConfig:
    """How the bridge talks to the broker; every queue and batch is bounded."""

    share_group: str = "cloud"
    shared: bool | None = None
    """Use ``$share/{share_group}/`` subscriptions: True, False, or None to probe."""
    poll_interval: float = 5.0
    """Seconds between outbox drains when nobody calls :meth:`MqttBridge.notify`."""
    batch: int = 500
    """Outbox rows published per drain transaction."""
    keep_sent: int = 10_000
    """Published outbox rows kept for inspection (by id: older sent rows are deleted)."""
    ingest_batch: int = 200
    """Inbound messages ingested per transaction at most (what has queued up meanwhile)."""
    max_inflight: int = 200
    max_queued_incoming: int = 10_000
    ack_repeat_s: float = 1.0
    """An AUDIT_ACK already sent this long ago is not repeated for a copy of its batch."""
    keepalive: int = 30
    timeout: float = 10.0
    reconnect_initial: float = 0.1
    reconnect_cap: float = 5.0
    key_rotation_topic: str = KEY_ROTATION_TOPIC
    time_sync_tolerance_s: int | None = MIN_CORRECTION_S
    """A live HELLO's clock off by more than this many seconds gets a TIME_SYNC (None: never)."""

    def __post_init__(self) -> None:
        if not self.share_group or any(c in self.share_group for c in "/+#"):
            raise ValueError("share_group must be a non-empty topic level without / + #")
        if not 0 < self.reconnect_initial <= self.reconnect_cap:
            raise ValueError("need 0 < reconnect_initial <= reconnect_cap")
        if self.batch < 1 or self.ingest_batch < 1 or self.poll_interval <= 0:
            raise ValueError("batch and ingest_batch must be >= 1 and poll_interval > 0")
        if self.keep_sent < 0:
            raise ValueError("keep_sent must be >= 0")
        if self.time_sync_tolerance_s is not None and self.time_sync_tolerance_s < 0:
            raise ValueError("time_sync_tolerance_s must be >= 0 or None")

    def reconnect_delay(self, failures: int, jitter: float) -> float:
        """Exponential, capped, with "equal jitter": in ``[d/2, d]`` for ``jitter`` in [0, 1]."""
        backoff = Backoff(initial=self.reconnect_initial, cap=self.reconnect_cap)
        return backoff.delay(failures, lambda: jitter)


@dataclass
class BridgeCounters:
    """What the bridge has done, for tests, dashboards and benchmarks."""

    published: int = 0  # outbox rows published and marked sent
    receipts: int = 0
    audits: int = 0
    audit_gaps: int = 0
    acks_withheld: int = 0  # copies of an acknowledged batch not acked again (ack_repeat_s)
    hellos: int = 0
    catch_ups: int = 0  # bundles queued for a door behind (HELLO, BASE_VERSION receipt)
    rotations: int = 0
    time_syncs: int = 0  # TIME_SYNCs queued for a live HELLO whose clock was off
    forged: int = 0  # receipts and audit batches whose lock signature failed
    refused: int = 0  # malformed frames, wrong frame types, unknown or mismatched doors
    ignored: int = 0  # empty payloads (cleared retained topics), topics not ours
    errors: int = 0  # unexpected failures, logged; the loop went on
    connects: int = 0
    failures: int = 0
    last_error: BaseException | None = field(default=None, repr=False)


class MqttBridge:
    """Publishes the MQTT outbox and ingests what doors publish, until :meth:`stop`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        host: str,
        port: int = 1883,
        clock: Callable[[], int],
        random: Callable[[int], bytes],
        cache: BundleCache | None = None,
        config: BridgeConfig | None = None,
        jitter: Callable[[], float] = _random.random,
        client_id: str | None = None,
    ) -> None:
        self.sessions, self.host, self.port = sessions, host, port
        self.clock, self.random = clock, random
        self.cache = cache if cache is not None else BundleCache()
        self.config = config or BridgeConfig()
        self.client_id = client_id or f"cloud-{random(6).hex()}"
        self.counters = BridgeCounters()
        self.ready = asyncio.Event()
        """Set once subscribed and the outbox was drained after connecting."""
        self.shared_subscriptions: bool | None = None
        """Whether the current session uses shared subscriptions (None: not connected yet)."""
        self._jitter = jitter
        self._client: aiomqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tick = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._session_task: asyncio.Task[None] | None = None
        self._threads: set[asyncio.Future[Any]] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.client_id)
        self._sends: set[asyncio.Task[None]] = set()
        self._acks: dict[str, tuple[int, float]] = {}
        self._done = asyncio.Event()

    @classmethod
    def from_settings(
        cls, settings: CloudSettings, *, cache: BundleCache | None = None, **options: Any
    ) -> MqttBridge:
        """A bridge for the database and broker ``settings`` name (``MQTT_URL`` must be set)."""
        if settings.mqtt_url is None:
            raise ValueError("no MQTT broker configured: set MQTT_URL (mqtt://host:port)")
        host, port = parse_mqtt_url(settings.mqtt_url)
        sessions = session_factory(make_engine(settings.database_url))
        clock, random = settings.clock, settings.random
        return cls(
            sessions, host=host, port=port, clock=clock, random=random, cache=cache, **options
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, drain, serve and reconnect with backoff until :meth:`stop` is called."""
        if self._loop is not None:
            raise RuntimeError("MqttBridge.run() may be called once")
        self._loop = asyncio.get_running_loop()
        try:
            failures = 0
            while not self._stopping.is_set():
                came_up = await self._one_session()
                if self._stopping.is_set():
                    break
                failures = 0 if came_up else failures + 1
                await self._pause(self.config.reconnect_delay(failures, self._jitter()))
        finally:
            await asyncio.gather(*self._threads, return_exceptions=True)
            self._executor.shutdown(wait=False)
            self._done.set()

    async def stop(self) -> None:
        """Disconnect and make :meth:`run` return (unsent rows stay for the next bridge)."""
        self._stopping.set()
        task = self._session_task
        while task is not None and not task.done():
            task.cancel()  # again if aiomqtt swallowed it (Python 3.11's wait_for can)
            await asyncio.wait({task}, timeout=_CANCEL_RETRY_S)
        if self._loop is not None:
            await self._done.wait()

    def notify(self) -> None:
        """Ask for an outbox drain now (call after committing a change; any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():  # else: the connect-time drain will
            loop.call_soon_threadsafe(self._wake.set)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds (checked after each message and drain; unbounded)."""
        while True:
            tick = self._tick
            if predicate():
                return
            await tick.wait()

    async def publish_key_rotation(self) -> bool:
        """Queue the newest KEY_ROTATION (retained) and publish it; False if there is none."""
        topic = self.config.key_rotation_topic
        queued = await self._transaction(queue_key_rotation, topic=topic)
        self.notify()
        return queued

    def _pulse(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _one_session(self) -> bool:
        """Run one connection to its end; return whether it came up."""
        connects = self.counters.connects
        self._session_task = asyncio.create_task(self._session(), name=self.client_id)
        try:
            await self._session_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # run() itself was cancelled, not just this session by stop()
        except Exception as exc:  # aiomqtt.MqttError above all; nothing may end the loop
            self.counters.failures += 1
            self.counters.last_error = exc
            log.info("%s: MQTT session ended: %s", self.client_id, exc)
        return self.counters.connects > connects

    # --- one session -----------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            clean_session=True,
            keepalive=self.config.keepalive,
            timeout=self.config.timeout,
            max_inflight_messages=self.config.max_inflight,
            max_queued_incoming_messages=self.config.max_queued_incoming,
            socket_options=[_NO_DELAY],
        )
        client.pending_calls_threshold = self.config.batch + self.config.max_inflight
        return client

    async def _session(self) -> None:
        async with self._new_client() as client:
            self._client = client
            drainer: asyncio.Task[None] | None = None
            ingester: asyncio.Task[None] | None = None
            try:
                shared = self.config.shared
                if shared is None:
                    shared = await self._probe_shared(client)
                self.shared_subscriptions = shared
                granted = await client.subscribe(self.subscriptions(shared))
                if _any_refused(granted):
                    raise aiomqtt.MqttError(f"broker refused a subscription: {granted!r}")
                self.counters.connects += 1
                log.info("%s: connected to %s:%d", self.client_id, self.host, self.port)
                drainer = asyncio.create_task(self._drain_loop(), name=f"{self.client_id} outbox")
                inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue(self.config.ingest_batch)
                ingester = asyncio.create_task(
                    self._ingest_loop(inbox), name=f"{self.client_id} ingest"
                )
                async for message in client.messages:
                    await inbox.put(message)  # waits while a full batch is being ingested
            finally:
                self._client = None
                self.ready.clear()
                for send in self._sends:
                    send.cancel()
                for task in (drainer, ingester):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task

    def subscriptions(self, shared: bool) -> list[tuple[str, int]]:
        """The topic filters the bridge subscribes to, all at QoS 1."""
        prefix = f"$share/{self.config.share_group}/" if shared else ""
        return [(f"{prefix}{TOPIC_PREFIX}doors/+/{leaf}", QOS) for leaf in INBOUND_LEAVES]

    async def _probe_shared(self, client: aiomqtt.Client) -> bool:
        """Whether the broker serves ``$share/`` subscriptions.

        Subscribe to probe topic A through a shared filter and to B plainly, publish A
        then B. The broker forwards both in order, so if B arrives without A first, the
        shared subscription matched nothing: the broker does not support them.
        """
        base = f"{TOPIC_PREFIX}cloud/probe/{self.client_id}"
        shared_topic, plain_topic = f"{base}/shared", f"{base}/plain"
        filters = [(f"$share/{self.config.share_group}/{shared_topic}", QOS), (plain_topic, QOS)]
        granted = await client.subscribe(filters)
        seen_shared = False
        if not _any_refused(granted):
            await client.publish(shared_topic, b"probe", qos=QOS)
            await client.publish(plain_topic, b"probe", qos=QOS)
            async with asyncio.timeout(self.config.timeout):
                async for message in client.messages:
                    if message.topic.matches(plain_topic):
                        break
                    seen_shared |= message.topic.matches(shared_topic)
        await client.unsubscribe([topic for topic, _ in filters])
        log.info("%s: shared subscriptions %s", self.client_id, "on" if seen_shared else "off")
        return seen_shared

    # --- outbox --------------------------------------------------------------------------

    async def _drain_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.drain()
            except aiomqtt.MqttError as exc:  # the session ends on its own
                log.info("%s: outbox drain stopped: %s", self.client_id, exc)
            except Exception as exc:  # the database, say: the next wake or poll tries again
                self._count_error(exc, "outbox drain")
            self.ready.set()
            self._pulse()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_interval):
                    await self._wake.wait()

    async def drain(self) -> int:
        """Publish every unsent outbox row in id order; return how many were published."""
        total = 0
        async with self._drain_lock:
            while (client := self._client) is not None:
                published = await self._drain_batch(client)
                if published is None:  # another cloud is draining: look again shortly
                    asyncio.get_running_loop().call_later(_LOCK_RETRY_S, self._wake.set)
                    break
                total += published
                if published < self.config.batch:
                    break
        return total

    async def _drain_batch(self, client: aiomqtt.Client) -> int | None:
        """Claim up to one batch, publish it (QoS 1, in order), then mark it sent."""
        session = self.sessions()
        try:
            rows = await self._off_loop(claim_unsent, session, self.config.batch)
            if rows is None:
                return None
            if rows:
                await self._off_loop(make_durable, session)
                await asyncio.gather(
                    *(client.publish(r.topic, r.payload, qos=QOS, retain=r.retain) for r in rows)
                )
                await self._off_loop(
                    mark_sent, session, [r.id for r in rows], self.config.keep_sent
                )
                self.counters.published += len(rows)
        finally:
            await self._off_loop(session.close)
        return len(rows)

    # --- inbound ---------------------------------------------------------------------------

    async def _ingest_loop(self, inbox: asyncio.Queue[aiomqtt.Message]) -> None:
        """Ingest what has arrived, a batch per transaction, in arrival order, forever."""
        while True:
            messages = [await inbox.get()]
            while len(messages) < self.config.ingest_batch and not inbox.empty():
                messages.append(inbox.get_nowait())
            try:
                await self._ingest(messages)
            except Exception as exc:  # the database, say: these messages are lost, not the loop
                self._count_error(exc, f"ingesting {len(messages)} messages")
            finally:
                self._pulse()

    async def _ingest(self, messages: Sequence[aiomqtt.Message]) -> None:
        """Decode each message, ingest the batch in one transaction, then answer each."""
        works: list[_Work] = []
        for message in messages:
            try:
                work = self._work_for(message)
            except Exception as exc:
                self._refuse(exc, message.topic.value)
            else:
                if work is not None:
                    works.append(work)
        if not works:
            return
        outcomes = await self._off_loop(self._run_batch, works)
        for work, outcome in zip(works, outcomes, strict=True):
            try:
                if isinstance(outcome, BaseException):
                    raise outcome
                work.done(outcome)
            except Exception as exc:
                self._refuse(exc, work.topic)

    def _refuse(self, exc: BaseException, topic: str) -> None:
        """Count and log a message that could not be ingested (nothing of it was stored)."""
        if isinstance(exc, AuthenticationError):
            self.counters.forged += 1
            log.warning("%s: refused a forged frame on %s: %s", self.client_id, topic, exc)
        elif isinstance(exc, ProtocolError | CloudError):
            self.counters.refused += 1
            log.info("%s: refused a frame on %s: %s", self.client_id, topic, exc)
        else:
            self._count_error(exc, f"message on {topic}")

    def _work_for(self, message: aiomqtt.Message) -> _Work | None:
        """The ingestion a message asks for, or None for an empty payload (§2.3 decoded)."""
        parsed = _TOPIC.match(message.topic.value)
        data = message.payload
        if parsed is None or not isinstance(data, bytes | bytearray) or not data:
            self.counters.ignored += 1  # an empty payload clears a retained topic
            return None
        door_id, leaf = parsed[1], parsed[2]
        _, message_type, payload = decode_frame(bytes(data))
        if message_type != _EXPECTED_TYPE[leaf]:
            raise _WrongType(f"a {leaf} topic carried frame type {message_type:#04x}")
        topic = message.topic.value
        if leaf == "receipt":
            return _Work(topic, ingest_receipt, (door_id, payload), {}, self._on_receipt)
        if leaf == "audit":
            done = functools.partial(self._on_audit, door_id)
            return _Work(topic, ingest_audit, (door_id, payload), {}, done)
        options = {
            "live": not message.retain,
            "rotation_topic": self.config.key_rotation_topic,
            "time_sync_tolerance_s": self.config.time_sync_tolerance_s,
        }
        return _Work(topic, record_hello, (door_id, payload), options, self._on_hello)

    def _on_receipt(self, receipt: Receipt) -> None:
        self.counters.receipts += 1
        if receipt.status is ReceiptStatus.BASE_VERSION:
            self.counters.catch_ups += 1
            self.notify()

    def _on_audit(self, door_id: str, outcome: tuple[AuditAck, bool]) -> None:
        ack, gap = outcome
        self.counters.audits += 1
        self.counters.audit_gaps += gap
        if self._ack_repeats(door_id, ack.up_to_seq):
            self.counters.acks_withheld += 1
        else:
            self._send_soon(door_topic(bytes.fromhex(door_id), "ack"), ack.to_frame())

    def _ack_repeats(self, door_id: str, up_to_seq: int) -> bool:
        """Whether an ack covering ``up_to_seq`` went to this door under ``ack_repeat_s`` ago.

        Copies of a batch (a relay's, a duplicate QoS 1 delivery) need no second ack so soon;
        a later copy (a lost ack, a reconnect) is acknowledged again (§6.5).
        """
        now = asyncio.get_running_loop().time()
        last = self._acks.get(door_id)
        if last is not None and last[0] >= up_to_seq and now - last[1] < self.config.ack_repeat_s:
            return True
        self._acks[door_id] = (up_to_seq, now)  # bounded: one entry per verified door
        return False

    def _on_hello(self, outcome: HelloOutcome) -> None:
        self.counters.hellos += 1
        self.counters.catch_ups += outcome.catch_up_base is not None
        self.counters.rotations += outcome.rotations
        self.counters.time_syncs += outcome.time_sync_seq is not None
        queued = outcome.catch_up_base is not None or outcome.rotations
        if queued or outcome.time_sync_seq is not None:
            self.notify()

    def _send_soon(self, topic: str, payload: bytes) -> None:
        """Publish without holding up the next message (QoS 1; a lost link ends the session)."""
        client = self._client
        if client is None:
            return
        task = asyncio.create_task(self._publish_quietly(client, topic, payload))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _publish_quietly(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=QOS)
        except aiomqtt.MqttError as exc:
            log.info("%s: could not publish on %s: %s", self.client_id, topic, exc)

    # --- transactions ----------------------------------------------------------------------

    async def _transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(cloud, *args, **kwargs)`` in one transaction, in a worker thread."""
        return await self._off_loop(self._run_transaction, fn, *args, **kwargs)

    async def _off_loop(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking database work in the bridge's one thread, in call order.

        One thread, so the bridge's transactions never wait on each other's locks (SQLite's
        busy handler sleeps). A cancelled caller leaves the work to finish; :meth:`run` waits.
        """
        call = functools.partial(fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        self._threads.add(future)
        future.add_done_callback(self._forget_thread)
        return await asyncio.shield(future)

    def _forget_thread(self, future: asyncio.Future[Any]) -> None:
        self._threads.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved here too, in case the caller was cancelled

    def _run_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Commit ``fn``'s work; retry when a concurrent cloud's transaction got in the way."""
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            try:
                with self.sessions.begin() as session:
                    cloud = CloudService(session, self.clock(), self.random, self.cache)
                    return fn(cloud, *args, **kwargs)
            except (IntegrityError, OperationalError) as exc:
                if attempt == _TRANSACTION_ATTEMPTS:
                    raise
                log.info("%s: retrying a transaction: %s", self.client_id, exc.orig)
        raise AssertionError("unreachable")

    def _run_batch(self, works: Sequence[_Work]) -> list[object]:
        """Each work's result (or the exception it raised), committed together when all succeed.

        One transaction for the batch is what makes a fan-out's receipts cheap. Should any
        work raise (a forged frame, say), the batch is rolled back whole and every work is
        run again in its own transaction, so one bad message cannot cost the others.
        """
        if len(works) > 1:
            try:
                return self._run_together(works)
            except Exception as exc:
                log.debug("%s: a batch of %d failed (%s)", self.client_id, len(works), exc)
        outcomes: list[object] = []
        for w in works:
            try:
                outcomes.append(self._run_transaction(w.fn, *w.args, **w.kwargs))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _run_together(self, works: Sequence[_Work]) -> list[object]:
        with self.sessions.begin() as session:
            cloud = CloudService(session, self.clock(), self.random, self.cache)
            loaded = _prefetch(session, works)  # held: the identity map keeps weak refs
            outcomes: list[object] = [w.fn(cloud, *w.args, **w.kwargs) for w in works]
            del loaded
        return outcomes

    def _count_error(self, exc: BaseException, what: str) -> None:
        self.counters.errors += 1
        self.counters.last_error = exc
        log.error("%s: %s failed", self.client_id, what, exc_info=exc)


def _prefetch(session: Session, works: Sequence[_Work]) -> list[object]:
    """Load the batch's doors and receipted versions in two queries instead of two per message.

    Every work's first argument is its door id. Rows land in the session's identity map, so
    the ingestion functions' ``session.get`` finds them without a query.
    """
    door_ids = {w.args[0] for w in works}
    versions: set[tuple[str, int]] = set()
    for w in works:
        if w.fn is ingest_receipt:
            with contextlib.suppress(ProtocolError):  # unverified: only to know what to load
                versions.add((w.args[0], Receipt.from_bytes(w.args[1]).list_version))
    loaded: list[object] = list(session.scalars(select(Door).where(Door.id.in_(door_ids))))
    if versions:
        key = tuple_(DoorVersion.door_id, DoorVersion.version)
        loaded += session.scalars(select(DoorVersion).where(key.in_(versions)))
    return loaded


@dataclass(frozen=True)
class _Work:
    """One inbound message's ingestion: ``fn(cloud, *args, **kwargs)``, then ``done(result)``."""

    topic: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    done: Callable[[Any], None]


class _WrongType(ProtocolError):
    """A well-formed frame of a type that does not belong on its topic."""


def _any_refused(granted: Sequence[Any]) -> bool:
    """Whether SUBACK refused any filter (0x80 or above)."""
    return any(
        code.is_failure if hasattr(code, "is_failure") else int(code) >= 0x80 for code in granted
    )
