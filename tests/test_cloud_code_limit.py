"""The self-activation rate limit is kept in the database: restarts, processes, bursts.

Every test runs on a SQLite file and on PostgreSQL (:mod:`tests.db_fixtures`; the
PostgreSQL case is skipped when no server is reachable) over the seeded world of
:mod:`tests.cloud_world`. The API tests serve apps with uvicorn
(:func:`tests.api_server.serve`); each app has its own engine and
:class:`~cloud.auth.ApiState`, as a separate server process would.

* A restart forgets nothing: wrong codes sent to one app refuse the right code at a
  new app on the same database, until the window has passed.
* A burst of parallel wrong guesses spread over two apps cannot exceed the limit:
  exactly ``SELF_ACTIVATION_LIMIT`` are answered "not right", the rest "too many",
  and exactly that many attempts are stored (the person's row lock counts them one
  after another).
* A refused guess is still recorded (its transaction is committed), yet a refused
  lost-card replacement leaves the lost card as it was.
* Attempts older than the window are deleted at the person's next check; the window
  and the limit are those the in-memory counters had; the limit is per person.
* A database at revision ``0001`` gains the ``code_attempt`` table by migrating.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import inspect, select

from cloud.api import create_app
from cloud.db import make_engine
from cloud.errors import RateLimitedError, WrongCodeError
from cloud.migrate import head_revision, migrate, schema_differences
from cloud.models import CodeAttempt, Keycard
from cloud.service import SELF_ACTIVATION_LIMIT, SELF_ACTIVATION_WINDOW_S
from cloud.settings import CloudSettings
from tests.api_server import serve
from tests.cloud_world import CloudWorld, counting_random, world_at

ANA, BEN, CHLOE, MAYA = "Ana Ruiz", "Ben Okafor", "Chloe Martin", "Maya Chen"
GUESSES = 12


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:
    world = world_at(database_url)
    yield world
    world.engine.dispose()


@contextmanager
def served(url: str, world: CloudWorld, label: str) -> Iterator[httpx.Client]:
    """A new app on the database at ``url`` (its own engine and state), and a client."""
    engine = make_engine(url)
    settings = CloudSettings(
        database_url=url, clock=lambda: world.now, random=counting_random(label)
    )
    try:
        app = create_app(settings, engine=engine)
        with serve(app) as base, httpx.Client(base_url=base, timeout=60) as http:
            yield http
    finally:
        engine.dispose()


def guess(http: httpx.Client, world: CloudWorld, who: str, uid: str, code: str) -> int:
    """Self-activate ``uid`` as ``who`` with ``code``; the status of the answer."""
    token = world.seed.tokens[who]
    response = http.post(
        f"/v1/me/keycards/{uid}/activate",
        headers={"Authorization": f"Bearer {token}"},
        json={"code": code},
    )
    return response.status_code


def attempts(world: CloudWorld, who: str) -> list[int]:
    """When the stored wrong codes of ``who`` were made."""
    person_id = world.seed.people[who]
    with world.sessions.begin() as session:
        query = select(CodeAttempt.at).where(CodeAttempt.person_id == person_id)
        return sorted(session.scalars(query))


def test_wrong_codes_still_count_after_a_restart(database_url: str, world: CloudWorld) -> None:
    uid, code = world.seed.cards["card-3"]
    with served(database_url, world, "before the restart") as http:
        for _ in range(SELF_ACTIVATION_LIMIT):
            assert guess(http, world, CHLOE, uid, "WRONG") == 422
    assert attempts(world, CHLOE) == [world.now] * SELF_ACTIVATION_LIMIT
    with served(database_url, world, "after the restart") as http:
        assert guess(http, world, CHLOE, uid, code) == 429
        world.now += SELF_ACTIVATION_WINDOW_S
        assert guess(http, world, CHLOE, uid, code) == 200
    assert attempts(world, CHLOE) == []  # pruned by the check that let the right code in


def test_parallel_wrong_guesses_on_two_servers_cannot_exceed_the_limit(
    database_url: str, world: CloudWorld
) -> None:
    uid, _ = world.seed.cards["card-3"]
    start = threading.Barrier(GUESSES)
    with served(database_url, world, "one") as one, served(database_url, world, "two") as two:

        def one_guess(n: int) -> int:
            start.wait(timeout=60)
            return guess((one, two)[n % 2], world, CHLOE, uid, f"GUESS{n}")

        with ThreadPoolExecutor(max_workers=GUESSES) as pool:
            statuses = sorted(pool.map(one_guess, range(GUESSES)))
    assert statuses == [422] * SELF_ACTIVATION_LIMIT + [429] * (GUESSES - SELF_ACTIVATION_LIMIT)
    assert len(attempts(world, CHLOE)) == SELF_ACTIVATION_LIMIT


def test_a_wrong_replacement_code_counts_but_leaves_the_lost_card_as_it_was(
    database_url: str, world: CloudWorld
) -> None:
    (uid, _), (new_uid, _) = world.seed.cards["card-4"], world.seed.cards["card-5"]
    with world.service() as cloud:
        cloud.activate_on_behalf(world.seed.managers[MAYA], world.seed.people[ANA], uid)
    token = world.seed.tokens[ANA]
    with served(database_url, world, "lost") as http:
        response = http.post(
            f"/v1/me/keycards/{uid}/lost",
            headers={"Authorization": f"Bearer {token}"},
            json={"replacement": new_uid, "replacement_code": "NOPE"},
        )
    assert response.status_code == 422 and "not right" in response.json()["detail"]
    assert attempts(world, ANA) == [world.now]
    with world.sessions.begin() as session:
        states = {c.uid: c.state for c in session.scalars(select(Keycard))}
    assert (states[uid.lower()], states[new_uid.lower()]) == ("active", "inventory")


def test_the_window_and_the_limit_are_unchanged_and_old_attempts_are_deleted(
    world: CloudWorld,
) -> None:
    chloe = world.seed.people[CHLOE]
    uid, code = world.seed.cards["card-3"]
    first = world.now
    with world.service() as cloud:
        for _ in range(SELF_ACTIVATION_LIMIT):
            with pytest.raises(WrongCodeError, match="not right"):
                cloud.self_activate(chloe, uid, "WRONG")
    world.now = first + SELF_ACTIVATION_WINDOW_S - 1  # still inside the window
    with world.service() as cloud, pytest.raises(RateLimitedError, match="wait 15 minutes"):
        cloud.self_activate(chloe, uid, code)
    world.now = first + SELF_ACTIVATION_WINDOW_S  # the window has passed
    with world.service() as cloud, pytest.raises(WrongCodeError):
        cloud.self_activate(chloe, uid, "WRONG AGAIN")
    assert attempts(world, CHLOE) == [world.now]  # the five old ones were deleted


def test_the_limit_is_per_person(world: CloudWorld) -> None:
    chloe, ben = world.seed.people[CHLOE], world.seed.people[BEN]
    (chloe_uid, _), (ben_uid, ben_code) = world.seed.cards["card-3"], world.seed.cards["card-6"]
    with world.service() as cloud:
        for _ in range(SELF_ACTIVATION_LIMIT):
            with pytest.raises(WrongCodeError):
                cloud.self_activate(chloe, chloe_uid, "WRONG")
    with world.service() as cloud:
        assert cloud.self_activate(ben, ben_uid, ben_code)
    assert attempts(world, BEN) == []


def test_a_database_at_0001_gains_the_code_attempt_table(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert migrate(engine=engine, revision="0001") == "0001"
        assert "code_attempt" not in inspect(engine).get_table_names()
        assert migrate(engine=engine) == head_revision() == "0004"
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
