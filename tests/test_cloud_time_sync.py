"""The cloud issues TIME_SYNC and hands out KEY_ROTATION frames to phones (§6.6, §6.7).

Theory of operation: the seeded world is served by uvicorn (``tests.test_cloud_api.open_api``)
on each database of :mod:`tests.db_fixtures` (SQLite, and PostgreSQL when reachable); a
resident's phone logs in over HTTP and asks for a TIME_SYNC bound to a lock's challenge.
The frames are checked with the cloud's public key and fed to the world's real lock
controllers. Every refusal is a problem+json 4xx and leaves every door's TIME_SYNC
sequence counter as it was. The migration ``0003`` adds that counter to existing rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeGuard

import pytest
from alembic import command
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, select, text

from cloud.db import make_engine
from cloud.keys import current_key, rotate
from cloud.migrate import alembic_config, head_revision, migrate, schema_differences
from cloud.models import CloudKey, Door
from cloud.time_sync import MIN_CORRECTION_S
from controller.events import Channel, Connected, FrameReceived, Send
from protocol import ErrorMessage, Hello, KeyRotation, MessageType, TimeSync, decode_message
from protocol.cloud_messages import NO_CHALLENGE
from protocol.crypto import ed25519_public_from_bytes
from protocol.frame import decode_frame
from tests.db_fixtures import database_url  # noqa: F401  (fixture)
from tests.test_cloud_api import (
    ANA,
    BODIES,
    MAYA,
    Api,
    activate,
    login_phone,
    ok,
    open_api,
    refused,
)

PHONE = f"{ANA}'s phone"
CHALLENGE = bytes(range(1, 17))
BLE = Channel("ble", 1)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:  # noqa: F811
    with open_api(database_url) as served:
        activate(served, MAYA, ANA, "card-1")
        login_phone(served, ANA)
        yield served


def sync_path(door_id: str) -> str:
    return f"/v1/phones/doors/{door_id}/time-sync"


def ask(api: Api, door_id: str, body: Any, who: str | None = PHONE) -> Any:
    return api.post(sync_path(door_id), who, json=body)


def counters(api: Api) -> dict[str, int]:
    """Every door's TIME_SYNC sequence, by id (what a refusal must leave as it was)."""
    with api.world.service() as cloud:
        rows = cloud.session.execute(select(Door.id, Door.time_sync_seq))
        return {door_id: seq for door_id, seq in rows}


def cloud_public(api: Api) -> bytes:
    with api.world.service() as cloud:
        return cloud.key.public


# --- issuing --------------------------------------------------------------------------------


def test_a_drifted_lock_gets_a_signed_challenge_bound_time_sync_with_a_rising_sequence(
    api: Api,
) -> None:
    door = api.door("Tower basement")
    now = api.world.now
    body = ok(ask(api, door, {"challenge": CHALLENGE.hex(), "lock_time": now - 600}))
    assert body["needed"] and body["sequence"] == 1 and body["key_epoch"] == 0
    assert (body["cloud_time"], body["lock_time"]) == (now, now - 600)
    frame = bytes.fromhex(body["frame"])
    _, kind, payload = decode_frame(frame)
    assert kind == MessageType.TIME_SYNC
    sync = TimeSync.verified_from_bytes(payload, ed25519_public_from_bytes(cloud_public(api)))
    assert (sync.door_id.hex(), sync.sequence, sync.cloud_time) == (door, 1, now)
    assert sync.challenge == CHALLENGE and sync.key_epoch == 0

    again = ok(ask(api, door, {"challenge": CHALLENGE.hex(), "lock_time": now + 3600}))
    assert again["sequence"] == 2
    assert counters(api)[door] == 2
    assert counters(api)[api.door("Tower gym")] == 0  # per door


def test_a_lock_whose_clock_is_right_gets_no_time_sync_and_the_counter_stays(api: Api) -> None:
    door = api.door("Tower gym")
    before = counters(api)
    for offset in (0, MIN_CORRECTION_S, -MIN_CORRECTION_S):
        lock_time = api.world.now + offset
        body = ok(ask(api, door, {"challenge": CHALLENGE.hex(), "lock_time": lock_time}))
        assert not body["needed"] and body["frame"] is None and body["sequence"] is None
    assert counters(api) == before


def test_the_time_sync_is_taken_by_the_lock_that_issued_the_challenge_and_only_once(
    api: Api,
) -> None:
    door = api.door("Tower gym")
    lock = api.world.locks[door]
    at = float(api.world.now)
    (hello,) = [decode_message(a.frame) for a in lock.handle(Connected(BLE), at) if _sent(a)]
    assert isinstance(hello, Hello)
    lock_time = lock.lock_time(at)
    body = ok(ask(api, door, {"challenge": hello.challenge.hex(), "lock_time": lock_time - 900}))
    frame = bytes.fromhex(body["frame"])
    assert _errors(lock.handle(FrameReceived(BLE, frame), at)) == []
    replay = _errors(lock.handle(FrameReceived(BLE, frame), at))
    assert [(e.code.name, e.about_type) for e in replay] == [("STALE", MessageType.TIME_SYNC)]


def test_concurrent_requests_never_sign_one_sequence_twice(api: Api) -> None:
    door = api.door("Tower basement")
    body = {"challenge": CHALLENGE.hex(), "lock_time": api.world.now - 60}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ok(ask(api, door, body)), range(16)))
    assert sorted(a["sequence"] for a in answers) == list(range(1, 17))
    assert counters(api)[door] == 16


# --- refusals ----------------------------------------------------------------------------------


def garbage_cases(api: Api) -> list[tuple[str, str, Any, str | None, int]]:
    """(what, door id, body, caller, status) — each must be refused and change nothing."""
    good = {"challenge": CHALLENGE.hex(), "lock_time": api.world.now - 600}
    basement = api.door("Tower basement")
    cases: list[tuple[str, str, Any, str | None, int]] = [
        ("unknown door", "ab" * 16, good, PHONE, 404),
        ("missing token", basement, good, None, 401),
        ("unknown token", basement, good, "not-a-token", 401),
        ("a resident's token", basement, good, ANA, 403),
        ("a manager's token", basement, good, MAYA, 403),
        ("short challenge", basement, {**good, "challenge": "ab" * 15}, PHONE, 422),
        ("non-hex challenge", basement, {**good, "challenge": "zz" * 16}, PHONE, 422),
        ("zero challenge", basement, {**good, "challenge": NO_CHALLENGE.hex()}, PHONE, 422),
        ("challenge as a number", basement, {**good, "challenge": 7}, PHONE, 422),
        ("missing challenge", basement, {"lock_time": good["lock_time"]}, PHONE, 422),
        ("negative lock time", basement, {**good, "lock_time": -1}, PHONE, 422),
        ("lock time beyond u32", basement, {**good, "lock_time": 2**32}, PHONE, 422),
        ("lock time as text", basement, {**good, "lock_time": "soon"}, PHONE, 422),
        ("an unknown field", basement, {**good, "sequence": 99}, PHONE, 422),
        ("a bad door id", "TOWER-BASEMENT", good, PHONE, 422),
        ("a door the person cannot open", api.door("Lofts entrance"), good, PHONE, 404),
    ]
    return cases


def test_endpoint_garbage_is_a_clear_problem_and_changes_nothing(api: Api) -> None:
    before = counters(api)
    for what, door, body, who, status in garbage_cases(api):
        detail = refused(ask(api, door, body, who), status)
        assert detail, what
    assert counters(api) == before


def test_a_door_the_person_cannot_open_is_refused_and_changes_nothing(api: Api) -> None:
    before = counters(api)
    for name in ("Lofts entrance", "Elm Court bike room"):
        body = {"challenge": CHALLENGE.hex(), "lock_time": 0}
        detail = refused(ask(api, api.door(name), body), 404)
        assert "among the doors you can open" in detail
    assert counters(api) == before


def test_a_raw_body_that_is_not_json_is_refused(api: Api) -> None:
    before = counters(api)
    response = api.post(sync_path(api.door("Tower gym")), PHONE, content=b"\xff\x00garbage")
    refused(response, 422)
    assert counters(api) == before


TIME_SYNC_BODIES = BODIES | st.fixed_dictionaries(
    {
        "challenge": st.binary(max_size=20).map(bytes.hex) | st.text(max_size=40),
        "lock_time": st.integers(min_value=-(2**40), max_value=2**40) | st.none(),
    }
)


@settings(max_examples=80, deadline=None, database=None)
@given(body=TIME_SYNC_BODIES, door=st.sampled_from(["Tower gym", "Lofts entrance", None]))
def test_random_json_is_never_a_server_error(shared: Api, body: Any, door: str | None) -> None:
    response = ask(shared, shared.door(door) if door else "ef" * 16, body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        refused(response, response.status_code)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with open_api(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'cloud.db'}") as served:
        activate(served, MAYA, ANA, "card-1")
        login_phone(served, ANA)
        yield served


# --- key rotations for phones ------------------------------------------------------------------


def test_phones_fetch_the_rotations_a_lock_at_an_older_epoch_needs_in_order(api: Api) -> None:
    assert ok(api.get("/v1/phones/rotations", PHONE)) == {"epoch": 0, "rotations": []}
    with api.world.service() as cloud:
        rotate(cloud.session, api.world.random)
        rotate(cloud.session, api.world.random)
        keys = {row.epoch: row.rotation for row in cloud.session.scalars(select(CloudKey))}
    body = ok(api.get("/v1/phones/rotations", PHONE, params={"after": 0}))
    assert body["epoch"] == 2
    frames = [bytes.fromhex(f) for f in body["rotations"]]
    assert frames == [keys[1], keys[2]]
    epochs = [KeyRotation.from_bytes(decode_frame(f)[2]).new_epoch for f in frames]
    assert epochs == [1, 2]
    assert ok(api.get("/v1/phones/rotations", PHONE, params={"after": 1}))["rotations"] == [
        frames[1].hex()
    ]
    assert ok(api.get("/v1/phones/rotations", PHONE, params={"after": 2}))["rotations"] == []


def test_rotation_requests_need_a_phone_token_and_a_valid_epoch(api: Api) -> None:
    refused(api.get("/v1/phones/rotations"), 401)
    refused(api.get("/v1/phones/rotations", MAYA), 403)
    for after in ("-1", "abc", str(2**32)):
        refused(api.get("/v1/phones/rotations", PHONE, params={"after": after}), 422)


def test_after_a_rotation_time_syncs_are_signed_by_the_new_key(api: Api) -> None:
    with api.world.service() as cloud:
        rotate(cloud.session, api.world.random)
        new = current_key(cloud.session)
    door = api.door("Tower basement")
    body = ok(ask(api, door, {"challenge": CHALLENGE.hex(), "lock_time": 0}))
    assert body["key_epoch"] == 1
    payload = decode_frame(bytes.fromhex(body["frame"]))[2]
    TimeSync.verified_from_bytes(payload, ed25519_public_from_bytes(new.public))


# --- the migration -------------------------------------------------------------------------------


def test_a_database_at_0002_gains_the_counter_at_zero_for_existing_doors(
    database_url: str,  # noqa: F811
) -> None:
    engine = make_engine(database_url)
    try:
        assert migrate(engine=engine, revision="0002") == "0002"
        with engine.begin() as db:
            db.execute(text("INSERT INTO portfolio (id, name) VALUES (:i, 'p')"), {"i": "a" * 32})
            db.execute(
                text(
                    "INSERT INTO property (id, portfolio_id, name, utc_offset_minutes)"
                    " VALUES (:i, :p, 'b', 0)"
                ),
                {"i": "b" * 32, "p": "a" * 32},
            )
            db.execute(
                text(
                    "INSERT INTO door (id, property_id, name, online, identity_public,"
                    " sealing_public, doorcode_secret, list_version, synced_version, key_epoch,"
                    " audit_next_seq, audit_gaps) VALUES (:i, :p, 'd', false, :k, :k, :k,"
                    " 0, 0, 0, 1, 0)"
                ),
                {"i": "c" * 32, "p": "b" * 32, "k": bytes(32)},
            )
        assert migrate(engine=engine) == head_revision()
        assert schema_differences(engine) == []
        with engine.connect() as db:
            assert db.execute(text("SELECT time_sync_seq FROM door")).scalar_one() == 0
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        assert "time_sync_seq" not in {c["name"] for c in inspect(engine).get_columns("door")}
    finally:
        engine.dispose()


# --- helpers -------------------------------------------------------------------------------------


def _sent(action: object) -> TypeGuard[Send]:
    return isinstance(action, Send)


def _errors(actions: list[Any]) -> list[ErrorMessage]:
    messages = [decode_message(a.frame) for a in actions if isinstance(a, Send)]
    return [m for m in messages if isinstance(m, ErrorMessage)]
