"""Shared pieces of the console tests: a seeded cloud with real locks, served as the app.

Theory of operation: :class:`ConsoleWorld` is a :class:`tests.cloud_world.CloudWorld`
(the demo seed, a real lock controller per door) plus the cloud's ASGI app on the same
database with the world's clock, so what a test does through the world (a lock's
receipt, a phone's upload) is what the console shows. :func:`snapshot` captures every
row a console form could change, so a test can assert that a refused form changed
nothing. :func:`sign_in` signs an :class:`httpx.Client` (talking to the app served by
uvicorn, :func:`tests.api_server.serve`) in through the sign-in form, as a browser
would. The one test here checks the server-sent event format the live regions use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from cloud.api import create_app
from cloud.console._live import sse_event
from cloud.models import CodeAttempt, Door, EmailOutbox, Keycard, Token
from cloud.settings import CloudSettings
from simulators.fixture import counting_random
from tests.cloud_world import CloudWorld, sqlite_world, world_at

__all__ = ["ConsoleWorld", "console_world", "console_world_at", "csrf_of", "sign_in", "snapshot"]

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


class ConsoleWorld:
    """A seeded world and the cloud app serving it (console mounted at /console)."""

    def __init__(self, world: CloudWorld) -> None:
        self.world = world
        settings = CloudSettings(
            database_url="sqlite://",  # unused: the app runs on the world's engine
            clock=lambda: self.world.now,
            random=counting_random("console app"),
        )
        self.app: FastAPI = create_app(settings, engine=world.engine)

    def person(self, name: str) -> str:
        return self.world.seed.people[name]

    def token(self, name: str) -> str:
        return self.world.seed.tokens[name]

    def card(self, label: str) -> tuple[str, str]:
        return self.world.seed.cards[label]

    def door(self, name: str) -> str:
        return self.world.seed.doors[name]


def console_world(path: Path) -> ConsoleWorld:
    """A fresh world on a SQLite file under ``path``."""
    return ConsoleWorld(sqlite_world(str(path / "cloud.db")))


def console_world_at(url: str) -> ConsoleWorld:
    """A fresh world on the empty database at ``url`` (SQLite or PostgreSQL)."""
    return ConsoleWorld(world_at(url))


def snapshot(world: CloudWorld) -> dict[str, Any]:
    """Every row a console form could change (keycards, door versions, emails, tokens)."""
    with world.service() as cloud:
        session = cloud.session
        return {
            "cards": sorted(session.execute(select(Keycard.uid, Keycard.person_id, Keycard.state))),
            "doors": sorted(
                session.execute(select(Door.id, Door.list_version, Door.synced_version))
            ),
            "emails": len(session.execute(select(EmailOutbox.id)).all()),
            "tokens": len(session.execute(select(Token.token_hash)).all()),
            "attempts": len(session.execute(select(CodeAttempt.id)).all()),
        }


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, html[:2000]
    return found.group(1)


def sign_in(client: httpx.Client, token: str) -> str:
    """Sign ``client`` in with ``token`` through the form; return the landing page's HTML."""
    page = client.get("/console/sign-in")
    assert page.status_code == 200, page.text
    answer = client.post(
        "/console/sign-in", data={"csrf": csrf_of(page.text), "token": token, "next": ""}
    )
    assert answer.status_code == 303, answer.text
    landing = client.get(answer.headers["location"])
    assert landing.status_code == 200, landing.text
    return landing.text


def test_sse_event_splits_lines_into_data_fields() -> None:
    assert sse_event("update", "<p>a</p>\n<p>b</p>") == (
        "event: update\ndata: <p>a</p>\ndata: <p>b</p>\n\n"
    )
    assert sse_event("gone", "") == "event: gone\ndata: \n\n"
