"""Email: an outbox written with each change, drained by a sender with retries.

Theory of operation: the service writes an :class:`~cloud.models.EmailOutbox` row
in the same transaction as the change it reports (:meth:`CloudService._email`),
so an email exists exactly when its change committed. :class:`EmailSender` drains
the outbox afterwards, oldest row first. For each row it claims the row (``SELECT
… FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two cloud processes never send it at
once), hands it to the backend, and marks it sent in that row's own transaction.

* Nothing is lost: a process that dies before marking a row leaves it unsent, and
  the next sender sends it again.
* A repeat is recognisable: every row has a stable ``Message-ID`` (chosen when the
  change was made) and every attempt carries it, so the one possible repeat — a
  crash after the SMTP server accepted the message but before the commit — is the
  same message twice, which mail systems and people can see.
* Failures back off: a failed attempt is counted in ``attempts`` with the error in
  ``last_error``, and the row is retried after an exponentially growing delay
  (:class:`RetryPolicy`). After ``max_attempts`` the sender stops trying; the row
  stays unsent for an operator (:meth:`EmailSender.stuck`) and is reported once in
  the log and in the :class:`DrainReport`.

Backends (chosen by ``SMTP_URL``, :func:`backend_from_url`): :class:`SmtpBackend`
delivers through aiosmtplib; :class:`LoggingBackend` (no ``SMTP_URL``) writes one
log line per email and does *not* mark it sent — the outbox keeps every email, so
pointing a later process at an SMTP server delivers them all.

Backoff deadlines are kept in memory on the event loop's clock; a restarted
sender retries a failed row at once, then backs off again from its stored count.
On SQLite there is no row lock, so two senders on one SQLite file may both send
a row (the same Message-ID twice); run one sender per SQLite database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import aiosmtplib
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .models import EmailOutbox

__all__ = [
    "DEFAULT_MAIL_FROM",
    "DrainReport",
    "EmailBackend",
    "EmailSender",
    "LoggingBackend",
    "OutgoingEmail",
    "RetryPolicy",
    "SmtpBackend",
    "backend_from_url",
    "stuck_emails",
]

log = logging.getLogger(__name__)

DEFAULT_MAIL_FROM = "Latchsim <no-reply@latchsim.invalid>"
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class OutgoingEmail:
    """One outbox row as the backend sees it."""

    message_id: str
    recipient: str
    subject: str
    body: str

    @classmethod
    def from_row(cls, row: EmailOutbox) -> OutgoingEmail:
        return cls(row.message_id, row.recipient, row.subject, row.body)


class EmailBackend(ABC):
    """Where emails go. ``delivers``: whether a successful send marks the row sent."""

    delivers: ClassVar[bool] = True

    @abstractmethod
    async def send(self, email: OutgoingEmail) -> None:
        """Hand one email over; raise on failure (the sender retries)."""


class SmtpBackend(EmailBackend):
    """Delivery to an SMTP server through aiosmtplib (STARTTLS when offered)."""

    def __init__(
        self,
        host: str,
        port: int,
        mail_from: str = DEFAULT_MAIL_FROM,
        *,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,
        timeout_s: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.host, self.port, self.mail_from = host, port, mail_from
        self.username, self.password, self.use_tls = username, password, use_tls
        self.timeout_s, self.wall_clock = timeout_s, wall_clock

    def message(self, email: OutgoingEmail) -> EmailMessage:
        """The MIME message, carrying the row's stable Message-ID."""
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = email.recipient
        message["Subject"] = email.subject
        message["Date"] = formatdate(self.wall_clock(), usegmt=True)
        message["Message-ID"] = email.message_id
        message.set_content(email.body)
        return message

    async def send(self, email: OutgoingEmail) -> None:
        await aiosmtplib.send(
            self.message(email),
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            timeout=self.timeout_s,
        )

    def __repr__(self) -> str:
        scheme = "smtps" if self.use_tls else "smtp"
        return f"SmtpBackend({scheme}://{self.host}:{self.port})"


class LoggingBackend(EmailBackend):
    """No mail server: log one line per email and keep it in the outbox (never marked sent)."""

    delivers = False

    async def send(self, email: OutgoingEmail) -> None:
        log.info(
            "email %s to %s: %r (no SMTP_URL: kept in the outbox)",
            email.message_id,
            email.recipient,
            email.subject,
        )

    def __repr__(self) -> str:
        return "LoggingBackend()"


def backend_from_url(url: str | None, *, mail_from: str = DEFAULT_MAIL_FROM) -> EmailBackend:
    """``smtp://[user:pass@]host[:port]`` (``smtps://`` for TLS); None or "" → logging."""
    if not url:
        return LoggingBackend()
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(f"SMTP URL {url!r}: expected smtp://host[:port] or smtps://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"SMTP URL {url!r}: the port is not a number from 0 to 65535") from None
    tls = parts.scheme == "smtps"
    return SmtpBackend(
        parts.hostname,
        port or (465 if tls else 25),
        mail_from,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=tls,
    )


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff: ``base * 2**(n-1)`` after the n-th failure, at most ``max_delay``."""

    max_attempts: int = 8
    base_delay_s: float = 5.0
    max_delay_s: float = 900.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(60, max(0, failures - 1)))


@dataclass
class DrainReport:
    """What one :meth:`EmailSender.drain` did, by Message-ID."""

    sent: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Handed to a backend that does not deliver (logged, left in the outbox)."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(Message-ID, error) of each failed attempt."""
    given_up: list[str] = field(default_factory=list)
    """Rows that reached ``max_attempts`` in this drain: left for an operator."""


def stuck_emails(session: Session, max_attempts: int) -> list[EmailOutbox]:
    """Unsent rows the sender gave up on, oldest first."""
    query = select(EmailOutbox).where(
        EmailOutbox.sent.is_(False), EmailOutbox.attempts >= max_attempts
    )
    return list(session.scalars(query.order_by(EmailOutbox.id)))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]


class EmailSender:
    """Drains the email outbox through a backend; see the module docstring."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        backend: EmailBackend,
        *,
        policy: RetryPolicy | None = None,
        poll_interval_s: float = 2.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock`` (seconds, for backoff) defaults to the running event loop's clock."""
        self.sessions, self.backend = sessions, backend
        self.policy = policy or RetryPolicy()
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self._not_before: dict[int, float] = {}
        self._kept: set[int] = set()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def drain(self) -> DrainReport:
        """Try every due unsent row once, in id order."""
        report = DrainReport()
        ids = await asyncio.to_thread(self._unsent_ids)
        now = self._now()
        for row_id in ids:
            if row_id not in self._kept and self._not_before.get(row_id, now) <= now:
                await self._deliver(row_id, report)
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Drain every ``poll_interval_s`` until ``stop`` is set (database errors are logged)."""
        while not stop.is_set():
            try:
                await self.drain()
            except Exception as exc:  # e.g. the database is briefly unreachable
                log.warning("email sender: cannot drain the outbox: %s", _one_line(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await stop.wait()

    def stuck(self) -> list[EmailOutbox]:
        """Rows this sender's policy gave up on (for an operator)."""
        with self.sessions() as session:
            return stuck_emails(session, self.policy.max_attempts)

    def _unsent_ids(self) -> list[int]:
        query = select(EmailOutbox.id).where(
            EmailOutbox.sent.is_(False), EmailOutbox.attempts < self.policy.max_attempts
        )
        with self.sessions() as session:
            return list(session.scalars(query.order_by(EmailOutbox.id)))

    async def _deliver(self, row_id: int, report: DrainReport) -> None:
        session = self.sessions()
        try:
            row = await asyncio.to_thread(self._claim, session, row_id)
            if row is None:  # sent meanwhile, or another sender holds it
                return
            email = OutgoingEmail.from_row(row)
            try:
                await self.backend.send(email)
            except Exception as exc:
                attempts = await asyncio.to_thread(self._record_failure, session, row, exc)
                self._after_failure(row_id, email, attempts, _one_line(exc), report)
                return
            if not self.backend.delivers:
                self._kept.add(row_id)
                report.kept.append(email.message_id)
                return
            await asyncio.to_thread(self._mark_sent, session, row)
            self._not_before.pop(row_id, None)
            report.sent.append(email.message_id)
        finally:
            await asyncio.to_thread(session.close)

    def _claim(self, session: Session, row_id: int) -> EmailOutbox | None:
        """Lock the row for this transaction (skipping it if another sender holds it).

        On SQLite, which has no row locks (one sender per database), the transaction ends
        here instead: it would hold the database's write lock while SMTP answers.
        """
        query = select(EmailOutbox).where(EmailOutbox.id == row_id, EmailOutbox.sent.is_(False))
        row = session.scalars(query.with_for_update(skip_locked=True)).first()
        if session.get_bind().dialect.name == "sqlite":
            session.commit()
        return row

    def _mark_sent(self, session: Session, row: EmailOutbox) -> None:
        """The row's own transaction: sent, with the attempt counted."""
        row.attempts += 1
        row.sent = True
        session.commit()

    def _record_failure(self, session: Session, row: EmailOutbox, exc: Exception) -> int:
        """Count the failed attempt and keep its error; return the attempts so far."""
        row.attempts = attempts = row.attempts + 1
        row.last_error = _one_line(exc)
        session.commit()
        return attempts

    def _after_failure(
        self, row_id: int, email: OutgoingEmail, attempts: int, error: str, report: DrainReport
    ) -> None:
        report.failed.append((email.message_id, error))
        if attempts >= self.policy.max_attempts:
            self._not_before.pop(row_id, None)
            report.given_up.append(email.message_id)
            log.error(
                "email %s to %s: giving up after %d attempts, left in the outbox: %s",
                email.message_id,
                email.recipient,
                attempts,
                error,
            )
            return
        delay = self.policy.delay(attempts)
        self._not_before[row_id] = self._now() + delay
        log.warning(
            "email %s to %s: attempt %d failed, retrying in %.0f s: %s",
            email.message_id,
            email.recipient,
            attempts,
            delay,
            error,
        )
