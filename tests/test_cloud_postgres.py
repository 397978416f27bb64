"""The cloud on each database (SQLite file, PostgreSQL): migrations, CLI, concurrency.

* Migrations: an empty database migrated to head has exactly the models' schema
  (Alembic's ``compare_metadata`` finds no difference), and back down to nothing.
* ``door-cloud``: migrate, seed-demo and rotate-key on each database; garbage
  flags and bad database URLs give one line and exit 2 or 1, never a traceback.
* Concurrent changes never lose a version bump: see below.

Two managers' requests run at once in two threads, each with its own session:
one activates Ana's cards, the other Ben's, and Ana and Ben share every door of
Harbor Tower. Each activation bumps each shared door exactly once, so after all
rounds every door's ``list_version`` equals the number of activations, every
version has its :class:`~cloud.models.DoorVersion` row, and each recorded digest
equals the digest of the list recomputed for that version. On PostgreSQL the door
row lock (``SELECT … FOR UPDATE``) serialises the two; on SQLite the database
write lock does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, select

from cloud.cli import main
from cloud.db import create_schema, make_engine
from cloud.errors import ConflictError
from cloud.migrate import alembic_config, head_revision, migrate, schema_differences
from cloud.models import Door, DoorEntry, DoorVersion, Keycard, Token
from cloud.seed import token_hash
from cloud.service import CloudService, hash_code
from cloud.sync import BundleCache, doors_of_person
from controller.cli import main as controller_main
from protocol import Credential, CredentialList, CredentialStatus
from tests.cloud_world import CloudWorld, counting_random, world_at

ROUNDS = 25
SHARED_DOORS = ("Tower lobby", "Tower basement", "Tower gym")


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:
    world = world_at(database_url)
    yield world
    world.engine.dispose()


# --- migrations -------------------------------------------------------------------------


def test_migrating_an_empty_database_gives_exactly_the_models_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert migrate(engine=engine) == head_revision() == "0004"
        assert schema_differences(engine) == []
        assert migrate(engine=engine) == head_revision()  # again: nothing to do
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_a_database_made_by_create_schema_is_adopted_at_head(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        assert migrate(engine=engine) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


# --- door-cloud ------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_migrate_then_seed_demo_prints_tokens_and_card_codes(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "migrate", "--database", database_url)
    assert status == 0 and "revision 0004 (head)" in out
    status, out, _ = run(capsys, "seed-demo", "--database", database_url)
    assert status == 0
    seeded = json.loads(out)
    assert set(seeded["managers"]) == {"Maya Chen", "Omar Haddad"}
    assert set(seeded["residents"]) == {"Ana Ruiz", "Ben Okafor", "Chloe Martin"}
    assert len(seeded["cards"]) == 8 and len(seeded["doors"]) == 6
    maya, card = seeded["managers"]["Maya Chen"], seeded["cards"]["card-1"]
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            role = connection.execute(
                select(Token.role, Token.subject_id).where(
                    Token.token_hash == token_hash(maya["token"])
                )
            ).one()
            stored = connection.execute(
                select(Keycard.activation_code_hash).where(Keycard.uid == card["uid"])
            ).scalar_one()
    finally:
        engine.dispose()
    assert tuple(role) == ("manager", maya["id"])
    assert stored == hash_code(card["activation_code"])
    status, out, err = run(capsys, "seed-demo", "--database", database_url)
    assert status == 1 and out == "" and err.count("\n") == 1 and "already holds data" in err


def test_cli_rotate_key_lists_the_doors_behind(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "seed-demo", "--database", database_url)[0] == 0
    status, out, _ = run(capsys, "rotate-key", "--database", database_url)
    assert status == 0 and out.startswith("cloud key epoch 1: public key ")
    assert "6 door(s) behind" in out and out.count("epoch 0") == 6
    status, out, _ = run(capsys, "rotate-key", "--database", database_url)
    assert status == 0 and out.startswith("cloud key epoch 2")


def test_cli_refuses_an_unmigrated_database(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command_name in ("rotate-key", "serve"):
        status, out, err = run(capsys, command_name, "--database", database_url)
        assert status == 1 and out == "" and err.count("\n") == 1
        assert "has no schema; run `door-cloud migrate`" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["migrate", "--bogus"],
        ["migrate", "--database"],
        ["seed-demo", "extra"],
        ["serve", "--port", "http"],
        ["serve", "--port", "70000"],
        ["serve", "--smtp", "http://mail"],
        ["serve", "--smtp", "smtp://h:99999"],
        ["serve", "--mqtt", "tcp://broker"],
        ["rotate-key", "--host", "x"],
    ],
)
def test_cli_bad_flags_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("door-cloud") and "Traceback" not in err


@pytest.mark.parametrize(
    "url",
    [
        "nonsense",
        "mysql://user:secret@host/db",
        "postgresql://user:secret@127.0.0.1:1/db",
        "sqlite:////nonexistent-directory/cloud.db",
    ],
)
@pytest.mark.parametrize("command_name", ["migrate", "seed-demo", "rotate-key"])
def test_cli_bad_database_one_line_exit_1(
    command_name: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, command_name, "--database", url)
    assert status == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("door-cloud: error: ") and "Traceback" not in err
    assert "secret" not in err


# --- concurrency -----------------------------------------------------------------------


def _new_cards(world: CloudWorld, label: str, count: int) -> list[str]:
    random = counting_random(f"cards {label}")
    uids = [random(7).hex() for _ in range(count)]
    with world.sessions.begin() as session:
        for uid in uids:
            session.add(Keycard(uid=uid, card_key=random(16), activation_code_hash=hash_code(uid)))
    return uids


def _activations(
    world: CloudWorld,
    manager: str,
    person: str,
    uids: list[str],
    start: threading.Barrier,
    *,
    look_first: bool,
    label: str = "",
) -> Callable[[], None]:
    """A thread body: one transaction per card, every round started together with the other.

    ``look_first``: the request loads every door before it changes anything (as a
    console page would), so stale Door objects sit in the session's identity map.
    """
    random = counting_random(f"service {person} {label}")

    def run() -> None:
        for uid in uids:
            start.wait(timeout=60)
            with world.sessions.begin() as session:
                looked = list(session.scalars(select(Door))) if look_first else []
                CloudService(session, world.now, random, BundleCache()).activate_on_behalf(
                    manager, person, uid
                )
                del looked

    return run


def _run_together(bodies: list[Callable[[], None]], start: threading.Barrier) -> None:
    """Run each body in its own thread; re-raise the first failure (and free the other)."""
    errors: list[BaseException] = []

    def guarded(body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=guarded, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    failures = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if failures or errors:
        raise (failures or errors)[0]


def _check_history(world: CloudWorld, door_id: str, changes: int) -> None:
    """Every version 1..changes is recorded with the digest of the list it had then."""
    with world.sessions.begin() as session:
        door = session.get(Door, door_id)
        assert door is not None and door.list_version == changes
        entries = list(session.scalars(select(DoorEntry).where(DoorEntry.door_id == door_id)))
        recorded = {
            v.version: v.digest
            for v in session.scalars(select(DoorVersion).where(DoorVersion.door_id == door_id))
        }
    assert sorted(recorded) == list(range(1, changes + 1))
    assert len(entries) == changes + 2  # one keycard per change + Ana's and Ben's PERSON entries
    for version, digest in recorded.items():
        held = [e.encoded for e in entries if e.changed_version <= version and e.encoded]
        expected = CredentialList.from_encoded_entries(
            door_id=bytes.fromhex(door_id), version=version, entries=held
        )
        assert digest == expected.digest, f"door {door_id} version {version}"


@pytest.mark.parametrize("look_first", [False, True], ids=["fresh-session", "doors-loaded"])
def test_two_managers_changing_the_same_doors_at_once_lose_no_version_bump(
    world: CloudWorld, look_first: bool
) -> None:
    ana, ben = world.seed.people["Ana Ruiz"], world.seed.people["Ben Okafor"]
    maya = world.seed.managers["Maya Chen"]
    start = threading.Barrier(2)
    bodies = [
        _activations(world, maya, who, _new_cards(world, who, ROUNDS), start, look_first=look_first)
        for who in (ana, ben)
    ]
    _run_together(bodies, start)
    for name in SHARED_DOORS:
        _check_history(world, world.seed.doors[name], 2 * ROUNDS)


def test_two_changes_for_the_same_person_at_once_both_reach_every_door(world: CloudWorld) -> None:
    """Two requests change two cards of one person at once: each door ends up with both.

    Without the person lock, each request would resync from a stale view of the other's
    card and write it back to its old state.
    """
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    start = threading.Barrier(2)
    first, second = (
        _new_cards(world, "same person a", ROUNDS),
        _new_cards(world, "same person b", ROUNDS),
    )
    bodies = [
        _activations(world, maya, ana, uids, start, look_first=True, label=uids[0])
        for uids in (first, second)
    ]
    _run_together(bodies, start)
    with world.sessions.begin() as session:
        for name in SHARED_DOORS:
            door_id = world.seed.doors[name]
            active = {
                e.credential_id
                for e in session.scalars(select(DoorEntry).where(DoorEntry.door_id == door_id))
                if e.encoded is not None and e.kind == 1
            }
            assert active == set(first) | set(second), name


def test_deactivating_one_card_while_activating_another_for_the_same_person(
    world: CloudWorld,
) -> None:
    """Each request's resync sees the other's committed card: no card comes back to life."""
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    old, new = _new_cards(world, "old cards", ROUNDS), _new_cards(world, "new cards", ROUNDS)
    for uid in old:
        with world.sessions.begin() as session:
            CloudService(
                session, world.now, counting_random(f"pre {uid}"), BundleCache()
            ).activate_on_behalf(maya, ana, uid)
    start = threading.Barrier(2)

    def deactivate() -> None:
        for uid in old:
            start.wait(timeout=60)
            with world.sessions.begin() as session:
                service = CloudService(
                    session, world.now, counting_random(f"de {uid}"), BundleCache()
                )
                list(session.scalars(select(Keycard)))  # a console page loaded every card first
                service.deactivate_on_behalf(maya, ana, uid)

    _run_together(
        [deactivate, _activations(world, maya, ana, new, start, look_first=True, label="n")], start
    )
    with world.sessions.begin() as session:
        for name in SHARED_DOORS:
            door_id = world.seed.doors[name]
            statuses = {
                e.credential_id: e.encoded[2 + e.encoded[1]]
                for e in session.scalars(select(DoorEntry).where(DoorEntry.door_id == door_id))
                if e.encoded is not None and e.kind == 1
            }
            assert {uid for uid, status in statuses.items() if status == 1} == set(new), name
            assert {uid for uid, status in statuses.items() if status == 2} == set(old), name


def test_two_managers_activating_one_card_for_two_people_at_once_one_wins(
    world: CloudWorld,
) -> None:
    """The loser gets a conflict, and the card is active only where its holder may open."""
    ana, ben = world.seed.people["Ana Ruiz"], world.seed.people["Ben Okafor"]
    maya = world.seed.managers["Maya Chen"]
    uids = _new_cards(world, "contested", ROUNDS)
    start = threading.Barrier(2)
    won: dict[str, list[str]] = {ana: [], ben: []}

    def activating(person: str) -> Callable[[], None]:
        random = counting_random(f"contest {person}")

        def run() -> None:
            for uid in uids:
                start.wait(timeout=60)
                try:
                    with world.sessions.begin() as session:
                        CloudService(session, world.now, random, BundleCache()).activate_on_behalf(
                            maya, person, uid
                        )
                except ConflictError:
                    continue
                won[person].append(uid)

        return run

    _run_together([activating(ana), activating(ben)], start)
    assert sorted(won[ana] + won[ben]) == sorted(uids)  # each card: exactly one winner
    with world.sessions.begin() as session:
        holders = {c.uid: c.person_id for c in session.scalars(select(Keycard))}
        for person, cards in won.items():
            assert all(holders[uid] == person for uid in cards)
            openable = set(doors_of_person(session, person))
            entries = select(DoorEntry).where(DoorEntry.credential_id.in_(cards))
            active_at = {
                e.door_id
                for e in session.scalars(entries)
                if e.encoded is not None
                and Credential.from_encoded(e.encoded).status is CredentialStatus.ACTIVE
            }
            assert active_at <= openable, person


def test_cli_register_door_from_the_provisioned_registration(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "seed-demo", "--database", database_url)
    assert status == 0
    seeded = json.loads(out)
    tower = seeded["properties"]["Harbor Tower"]
    registration = tmp_path / "reg.json"
    assert controller_main(
        ["provision", "--flash", str(tmp_path / "lock"), "--cloud-key", seeded["cloud_public_key"],
         "--property-id", tower, "--registration", str(registration)]
    ) == 0  # fmt: skip
    capsys.readouterr()
    argv = ["register-door", str(registration), "--name", "Tower roof", "--database", database_url]
    status, out, err = run(capsys, *argv)
    assert status == 0 and err == "" and "Tower roof, BLE only" in out
    assert "its first list: version 1" in out  # the tower's residents, in one version
    door_id = json.loads(registration.read_text())["door_id"]
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                select(Door.name, Door.online, Door.list_version).where(Door.id == door_id)
            ).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("Tower roof", False, 1)
    status, out, err = run(capsys, *argv)  # twice: refused, nothing changes
    assert status == 1 and out == "" and err.count("\n") == 1 and "already registered" in err


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", '{"door_id": "zz"}', '{"door_id": "00"}'],
    ids=["text", "list", "bad-hex", "short"],
)
def test_cli_register_door_refuses_a_bad_registration_file(
    database_url: str, tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "reg.json"
    bad.write_text(content)
    argv = ["register-door", str(bad), "--name", "X", "--database", database_url]
    status, out, err = run(capsys, *argv)
    assert status == 1 and out == "" and err.count("\n") == 1 and str(bad) in err
