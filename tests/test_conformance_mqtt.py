"""The MQTT adapter: the reference lock's MQTT face, judged through a real broker.

Frames on the ``mqtt`` channel are published to the door's §10 topics and the door's
answers collected from its topics (``conformance/mqtt.py``); cards, keypad, clock,
observation, power and BLE go to the same lock through its in-process side channel.
The reference must pass the whole catalogue this way, with no requirement skipped (the
side channel offers every capability), and mutants must still be caught when their bug
is reached over the broker.

Broker: the ``mqtt_broker`` fixture (``tests/conftest.py``): Mosquitto when reachable,
else an embedded amqtt broker; the reference run also runs on an embedded one. Each test
records and prints which broker it used. The adapter runs its own event loop in a
thread, so each test hands the (blocking) suite to a worker thread while the test's loop
keeps serving an embedded broker (the adapter is built in a worker thread too: its
constructor checks the broker).
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import aiomqtt
import pytest

from conformance import Verdict, catalogue, run, select
from conformance.cli import main
from conformance.cloud import SuiteCloud
from conformance.lut import MQTT
from conformance.mqtt import MqttLock
from conformance.session import SUITE_CAPACITY, T0, Session
from infra.broker import BrokerChoice, parse_mqtt_url
from protocol import ErrorMessage, Hello, Message, Receipt
from protocol.transport import TOPIC_PREFIX, door_topic
from tests.conformance_mutants import MUTANTS


# Not also forced onto the embedded broker where Mosquitto runs: amqtt 0.12 now and then
# drops a client's connect when it races another client's subscribe ("dictionary changed
# size during iteration" in its connect handler), and the whole catalogue reconnects the
# door often enough to hit it. Where Mosquitto is unreachable the test runs on amqtt.
async def test_reference_passes_every_requirement_over_mqtt(mqtt_broker: BrokerChoice) -> None:
    lock = await asyncio.to_thread(MqttLock, mqtt_broker.url)
    try:
        results = await asyncio.to_thread(run, lock)
    finally:
        await asyncio.to_thread(lock.close)
    assert {r.requirement.name: r.detail for r in results if r.verdict is not Verdict.PASS} == {}
    assert len(results) == len(catalogue())


@pytest.mark.parametrize(
    ("name", "tags"), [("accepts_rollback", ["bundle"]), ("torn_apply", ["power-cut"])]
)
async def test_a_mutant_is_caught_over_mqtt(
    mqtt_broker: BrokerChoice, name: str, tags: list[str]
) -> None:
    """A bundle bug, and a flash bug struck by a power cut while the door handles a bundle
    it took from the broker."""
    mutant = next(m for m in MUTANTS if m.name == name)
    lock = await asyncio.to_thread(MqttLock, mqtt_broker.url, mutant.build())
    try:
        results = await asyncio.to_thread(run, lock, select(catalogue(), only=tags))
    finally:
        await asyncio.to_thread(lock.close)
    failed = {r.requirement.name: r.verdict for r in results if r.verdict is not Verdict.PASS}
    assert failed == dict.fromkeys(mutant.breaks, Verdict.FAIL)


async def _leave_stale_state(url: str, door_id: bytes) -> None:
    """What an earlier provisioning of the same door id can leave on a broker (§10): a
    retained HELLO, a retained frame on ``bundle``, and a frame queued in the door's
    persistent session."""
    host, port = parse_mqtt_url(url)
    door = aiomqtt.Client(host, port, identifier=f"door-{door_id.hex()}", clean_session=False)
    async with door:
        await door.subscribe(door_topic(door_id, "bundle"), qos=1)
    async with aiomqtt.Client(host, port, clean_session=True) as cloud:
        await cloud.publish(door_topic(door_id, "hello"), b"stale hello", qos=1, retain=True)
        await cloud.publish(door_topic(door_id, "bundle"), b"queued garbage", qos=1)
        await cloud.publish(door_topic(door_id, "bundle"), b"retained garbage", qos=1, retain=True)


async def test_stale_hello_and_queued_frames_do_not_leak(mqtt_broker: BrokerChoice) -> None:
    door_id = SuiteCloud(lock_time=T0, capacity=SUITE_CAPACITY).door_id
    await _leave_stale_state(mqtt_broker.url, door_id)
    lock = await asyncio.to_thread(MqttLock, mqtt_broker.url)

    def session() -> tuple[list[Message], list[Message]]:
        s = Session.start(lock)
        connected = s.messages(lock.connect(MQTT))
        s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
        return connected, s.messages(s.deliver(s.cloud.bundle(0)))

    try:
        connected, answered = await asyncio.to_thread(session)
    finally:
        await asyncio.to_thread(lock.close)
    hellos = [m for m in connected if isinstance(m, Hello)]
    assert len(hellos) == 1 and hellos[0].door_id == door_id
    assert not [m for m in connected + answered if isinstance(m, ErrorMessage)]
    assert len([m for m in answered if isinstance(m, Receipt)]) == 1
    assert await _retained(mqtt_broker.url, door_id) == []  # closing left nothing behind


async def _retained(url: str, door_id: bytes) -> list[str]:
    """The door's topics that hold a retained message. Retained messages come first after
    a subscription, so a marker published after it ends the wait (no timeout guessing)."""
    host, port = parse_mqtt_url(url)
    marker = f"{TOPIC_PREFIX}conformance-test/{uuid.uuid4().hex}"
    found: list[str] = []
    async with aiomqtt.Client(host, port, identifier=f"retained-{uuid.uuid4().hex}") as client:
        await client.subscribe(
            [(door_topic(door_id, "hello")[: -len("hello")] + "#", 1), (marker, 1)]
        )
        await client.publish(marker, b"end", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                if message.topic.value == marker:
                    return found
                if message.retain and message.payload:
                    found.append(message.topic.value)
    return found


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--adapter", "mqtt"], "--adapter mqtt needs --mqtt mqtt://HOST[:PORT]"),
        (["--adapter", "mqtt", "--mqtt", "http://broker"], "expected mqtt://host[:port]"),
        (["--adapter", "mqtt", "--mqtt", "mqtt://"], "expected mqtt://host[:port]"),
        (["--mqtt", "mqtt://127.0.0.1:1883"], "--mqtt is only for --adapter mqtt"),
        (["--adapter", "mqtt", "--command", "x"], "only for --adapter process"),
    ],
)
def test_bad_mqtt_flags_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("lock-conformance: error:")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_broker_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mqtt://127.0.0.1:{_closed_port()}"
    assert main(["--adapter", "mqtt", "--mqtt", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"lock-conformance: error: cannot reach an MQTT broker at {url}")


async def test_mqtt_adapter_from_the_command_line(
    mqtt_broker: BrokerChoice, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--adapter", "mqtt", "--mqtt", mqtt_broker.url, "--only", "hello,rollback,audit"]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert "bundle_rollback_is_refused" in out and "audit_ack_releases_acknowledged_events" in out
    assert "— conformant" in out
