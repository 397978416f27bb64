"""The cloud process's settings, from arguments or the environment.

Theory of operation: everything the cloud talks to is named here and nowhere
else: the database (``DATABASE_URL``, default a SQLite file), the MQTT broker
(``MQTT_URL``; unset means no MQTT fan-out — online doors then wait for phones),
and the mail server (``SMTP_URL`` such as ``smtp://127.0.0.1:8025``; unset means
the logging backend: emails stay in the outbox and are logged). Clock and
randomness are injectable for tests and the fast simulator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .db import database_url

__all__ = ["CloudSettings"]


def _wall_clock() -> int:
    return int(time.time())


@dataclass(frozen=True, kw_only=True)
class CloudSettings:
    """Where the cloud keeps its state and whom it talks to."""

    database_url: str = field(default_factory=database_url)
    mqtt_url: str | None = field(default_factory=lambda: os.environ.get("MQTT_URL"))
    smtp_url: str | None = field(default_factory=lambda: os.environ.get("SMTP_URL"))
    mail_from: str = "Latchsim <no-reply@latchsim.invalid>"
    clock: Callable[[], int] = _wall_clock
    random: Callable[[int], bytes] = os.urandom
