"""Shared fixtures: the MQTT broker the integration tests run against.

Theory of operation: DESIGN.md says tests use Mosquitto when it is reachable and the
embedded amqtt broker otherwise. ``LATCHSIM_MQTT_URL`` (default
``mqtt://127.0.0.1:1883``) names the preferred broker; point it at a closed port to
force the embedded broker. The session header says which broker was found, and each
test using :func:`mqtt_broker` records its broker as the ``mqtt_broker`` user property
(shown in JUnit XML and in failure reports) and prints it.

``mqtt_broker`` takes an optional indirect parameter: ``"preferred"`` (the default:
Mosquitto if reachable, else embedded) or ``"embedded"`` (always a fresh amqtt broker),
so a test module can run against both.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator

import pytest

from infra.broker import DEFAULT_URL, BrokerChoice, parse_mqtt_url, pick_broker
from infra.broker import start_embedded_broker as _start_embedded

MQTT_URL_ENV = "LATCHSIM_MQTT_URL"


def preferred_mqtt_url() -> str:
    """The broker URL tests prefer: ``$LATCHSIM_MQTT_URL`` or Mosquitto's default."""
    return os.environ.get(MQTT_URL_ENV, DEFAULT_URL)


def pytest_report_header(config: pytest.Config) -> str:
    """One header line saying which MQTT broker the preferred-broker tests will use."""
    url = preferred_mqtt_url()
    host, port = parse_mqtt_url(url)
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return f"mqtt broker: {url} unreachable -> embedded amqtt broker ({MQTT_URL_ENV})"
    return f"mqtt broker: Mosquitto at {url} ({MQTT_URL_ENV})"


@pytest.fixture
async def mqtt_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerChoice]:
    """Mosquitto if reachable, else an embedded amqtt broker (``param="embedded"``: always)."""
    mode = getattr(request, "param", "preferred")
    if mode == "embedded":
        embedded = await _start_embedded()
        choice = BrokerChoice("embedded amqtt", embedded.url, embedded)
    else:
        choice = await pick_broker(preferred_mqtt_url())
    request.node.user_properties.append(("mqtt_broker", choice.describe()))
    print(f"MQTT broker for {request.node.name}: {choice.describe()}")
    try:
        yield choice
    finally:
        await choice.close()


# The database fixture (SQLite, and PostgreSQL when reachable) for every cloud test module.
from tests.db_fixtures import database_url  # noqa: E402,F401
