"""Email: outbox rows written with the change, delivered to a real SMTP server (aiosmtpd).

Each test activates Ana's keycard on Maya's behalf (which writes one outbox row in
the change's transaction) and drains the outbox with an :class:`EmailSender`,
against an aiosmtpd server on a free port of 127.0.0.1 — on SQLite and on
PostgreSQL. Backoff runs on a hand-moved clock, so no test sleeps through a delay.
The last test runs ``door-cloud serve`` as a process and sees it deliver the row.
"""

from __future__ import annotations

import asyncio
import email
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from cloud.email import (
    DrainReport,
    EmailBackend,
    EmailSender,
    LoggingBackend,
    OutgoingEmail,
    RetryPolicy,
    SmtpBackend,
    backend_from_url,
)
from cloud.migrate import migrate
from cloud.models import EmailOutbox
from tests.cloud_world import CloudWorld, world_at

MAIL_FROM = "Latchsim <no-reply@latchsim.invalid>"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class SmtpServer:
    """An aiosmtpd server that records what it accepts; startable later on a fixed port."""

    port: int = field(default_factory=free_port)
    received: list[tuple[list[str], Message]] = field(default_factory=list)
    controller: Controller | None = None

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def message_ids(self) -> list[str]:
        return [str(message["Message-ID"]) for _, message in self.received]


class ManualClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SimulatedCrash(Exception):
    """The process dies after the SMTP server accepted the message, before the commit."""


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:
    world = world_at(database_url)
    yield world
    world.engine.dispose()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    yield server
    server.stop()


def activate_ana(world: CloudWorld) -> EmailOutbox:
    """Maya activates Ana's card; return the outbox row that change wrote."""
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    with world.service() as cloud:
        cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
    rows = outbox(world)
    assert len(rows) == 1
    return rows[0]


def outbox(world: CloudWorld) -> list[EmailOutbox]:
    with world.sessions() as session:
        return list(session.scalars(select(EmailOutbox).order_by(EmailOutbox.id)))


def smtp_sender(world: CloudWorld, port: int, **kwargs: Any) -> EmailSender:
    return EmailSender(
        world.sessions, SmtpBackend("127.0.0.1", port, MAIL_FROM, timeout_s=5), **kwargs
    )


async def test_activation_email_is_delivered_once_with_its_stable_message_id(
    world: CloudWorld, smtp: SmtpServer
) -> None:
    row = activate_ana(world)
    assert row.recipient == "ana.ruiz@example.com" and not row.sent
    smtp.start()
    sender = smtp_sender(world, smtp.port)
    report = await sender.drain()
    assert report.sent == [row.message_id] and report.failed == []
    [(recipients, message)] = smtp.received
    assert recipients == ["ana.ruiz@example.com"] and message["To"] == "ana.ruiz@example.com"
    assert message["Message-ID"] == row.message_id and "activated" in message["Subject"]
    assert "Maya Chen activated your keycard" in message.get_payload()
    [after] = outbox(world)
    assert after.sent and after.attempts == 1 and after.last_error is None
    assert (await sender.drain()).sent == [] and len(smtp.received) == 1


async def test_smtp_down_retries_with_backoff_counts_attempts_then_delivers(
    world: CloudWorld, smtp: SmtpServer
) -> None:
    row = activate_ana(world)
    clock = ManualClock()
    policy = RetryPolicy(max_attempts=5, base_delay_s=10, max_delay_s=15)
    sender = smtp_sender(world, smtp.port, policy=policy, clock=clock)
    for attempts, wait in ((1, 10), (2, 15), (3, 15)):
        report = await sender.drain()
        assert [m for m, _ in report.failed] == [row.message_id]
        [stored] = outbox(world)
        assert stored.attempts == attempts and not stored.sent
        assert stored.last_error and "SMTPConnectError" in stored.last_error
        clock.now += wait - 1
        assert await sender.drain() == DrainReport()  # still backing off: nothing tried
        clock.now += 1
    smtp.start()
    assert (await sender.drain()).sent == [row.message_id]
    assert smtp.message_ids() == [row.message_id]
    [stored] = outbox(world)
    assert stored.sent and stored.attempts == 4


async def test_gives_up_after_max_attempts_and_leaves_the_row_for_an_operator(
    world: CloudWorld, caplog: pytest.LogCaptureFixture
) -> None:
    row = activate_ana(world)
    sender = smtp_sender(world, free_port(), policy=RetryPolicy(max_attempts=2, base_delay_s=0))
    assert (await sender.drain()).given_up == []
    with caplog.at_level(logging.ERROR, logger="cloud.email"):
        assert (await sender.drain()).given_up == [row.message_id]
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "giving up after 2 attempts" in error and row.message_id in error and "\n" not in error
    assert await sender.drain() == DrainReport()  # no more tries
    assert [s.message_id for s in sender.stuck()] == [row.message_id]
    [stored] = outbox(world)
    assert not stored.sent and stored.attempts == 2


async def test_crash_between_send_and_mark_sent_resends_the_same_message_id(
    world: CloudWorld, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = activate_ana(world)
    smtp.start()
    dying = smtp_sender(world, smtp.port)

    def crash(*_args: object) -> None:
        raise SimulatedCrash

    monkeypatch.setattr(dying, "_mark_sent", crash)
    with pytest.raises(SimulatedCrash):
        await dying.drain()
    [stored] = outbox(world)
    assert not stored.sent and len(smtp.received) == 1  # delivered, but not recorded
    restarted = smtp_sender(world, smtp.port)
    assert (await restarted.drain()).sent == [row.message_id]
    assert smtp.message_ids() == [row.message_id, row.message_id]  # the repeat is recognisable
    assert outbox(world)[0].sent


async def test_logging_backend_logs_one_line_once_and_keeps_the_row(
    world: CloudWorld, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    row = activate_ana(world)
    sender = EmailSender(world.sessions, LoggingBackend())
    with caplog.at_level(logging.INFO, logger="cloud.email"):
        assert (await sender.drain()).kept == [row.message_id]
        assert (await sender.drain()).kept == []  # logged once per process
    [record] = caplog.records
    assert row.message_id in record.getMessage() and "ana.ruiz@example.com" in record.getMessage()
    assert "\n" not in record.getMessage()
    [stored] = outbox(world)
    assert not stored.sent and stored.attempts == 0
    smtp.start()  # a later process with SMTP_URL set delivers what the log kept
    assert (await smtp_sender(world, smtp.port).drain()).sent == [row.message_id]


async def test_run_delivers_until_stopped(world: CloudWorld, smtp: SmtpServer) -> None:
    row = activate_ana(world)
    smtp.start()
    stop = asyncio.Event()
    task = asyncio.create_task(smtp_sender(world, smtp.port, poll_interval_s=0.01).run(stop))
    async with asyncio.timeout(10):
        while not smtp.received:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert smtp.message_ids() == [row.message_id]


class SlowBackend(EmailBackend):
    """Takes a while to send, so that two senders overlap; records what it sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, email: OutgoingEmail) -> None:
        await asyncio.sleep(0.2)
        self.sent.append(email.message_id)


async def test_two_senders_at_once_send_each_row_once_on_postgresql(world: CloudWorld) -> None:
    if world.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks: run one sender per SQLite database (documented)")
    row = activate_ana(world)
    backend = SlowBackend()
    first, second = EmailSender(world.sessions, backend), EmailSender(world.sessions, backend)
    reports = await asyncio.gather(first.drain(), second.drain())
    assert backend.sent == [row.message_id]
    assert sorted(len(r.sent) for r in reports) == [0, 1]
    assert outbox(world)[0].sent


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        status: int = response.status
        return status


async def test_door_cloud_serve_delivers_the_outbox_over_smtp(
    world: CloudWorld, smtp: SmtpServer, database_url: str, tmp_path: Path
) -> None:
    migrate(engine=world.engine)  # adopts the schema CloudWorld created
    row = activate_ana(world)
    smtp.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SMTP_URL", "MQTT_URL")}
    argv = ["serve", "--database", database_url, "--port", str(port)]
    argv += ["--smtp", f"smtp://127.0.0.1:{smtp.port}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with asyncio.timeout(30):
            while not smtp.received:
                assert process.poll() is None, process.communicate()
                await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/openapi.json") == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in err, err
    assert f"http://127.0.0.1:{port}" in out
    assert smtp.message_ids() == [row.message_id] and outbox(world)[0].sent


def test_backend_from_url() -> None:
    assert isinstance(backend_from_url(None), LoggingBackend)
    assert isinstance(backend_from_url(""), LoggingBackend)
    plain = backend_from_url("smtp://127.0.0.1:2525", mail_from="x@y")
    assert isinstance(plain, SmtpBackend)
    assert (plain.host, plain.port, plain.use_tls, plain.mail_from) == (
        "127.0.0.1",
        2525,
        False,
        "x@y",
    )
    tls = backend_from_url("smtps://me:p%40ss@mail.example.com")
    assert isinstance(tls, SmtpBackend)
    assert (tls.port, tls.use_tls, tls.username, tls.password) == (465, True, "me", "p@ss")


@pytest.mark.parametrize("url", ["http://mail", "smtp://", "smtp://h:99999", "mail.example.com"])
def test_backend_from_bad_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(ValueError, match="SMTP URL"):
        backend_from_url(url)


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay_s=5, max_delay_s=60)
    assert [policy.delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
