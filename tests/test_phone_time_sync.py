"""Phones carry TIME_SYNC and KEY_ROTATION to BLE-only locks (§6.6, §6.7), real parts only.

Theory of operation: the served cloud and the offline Tower doors of
``tests.test_phone_end_to_end`` (uvicorn on localhost, :class:`controller.ble_door.BleDoor`
over provisioned lock runtimes on bumble's radio, phones through bleak), except that a lock
may start with a drifted clock. The cloud's clock, the phones' clocks and the locks'
reference time are the world's ``now``. Each test runs on SQLite and, when reachable, on
PostgreSQL (:mod:`tests.db_fixtures`). Keys rotate with the real ``door-cloud rotate-key``
command on the served database. Replays go straight to the lock runtime as frames from a
BLE connection, as a relay would send them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloud.cli import main as door_cloud
from cloud.migrate import migrate
from cloud.models import Door
from controller.ble_door import BleDoor
from controller.config import ControllerConfig
from controller.events import Channel, FrameReceived, Send
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from phone_bridge.phone import Phone
from phone_bridge.store import PhoneStore, StoreError
from phone_bridge.visit import VisitConfig
from protocol import ErrorMessage, KeyRotation, MessageType, Reason, TimeSync, decode_message
from protocol.crypto import ed25519_private_from_seed
from simulators.fixture import counting_random
from tests.cloud_world import CLOUD_SEED
from tests.db_fixtures import database_url  # noqa: F401  (fixture: SQLite, PostgreSQL)
from tests.test_ble_door import no_errors_logged  # noqa: F401  (autouse: the doors log no error)
from tests.test_cloud_api import ANA, MAYA, activate, ok, open_api
from tests.test_phone_end_to_end import (
    OFFLINE,
    Site,
    lock_identity,
    sync_online_doors,
    visit,
)

DRIFT_S = 600
"""Ten minutes: within the lock's bound for a challenge-bound step (one day)."""
RELAY = Channel("ble", 99)


@pytest.fixture
def no_signal() -> Iterator[str]:
    """A cloud URL on a localhost port nothing listens on (the phone has no signal)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{probe.getsockname()[1]}"


async def start_locks(site: Site, drift: dict[str, int]) -> None:
    """The offline doors on the radio; a door named in ``drift`` starts that many s off."""
    with site.api.world.service() as cloud:
        cloud_public = cloud.key.public
    loop = asyncio.get_running_loop()
    for name in OFFLINE:
        door_id = site.door(name)
        runtime = LockRuntime.provision(
            Flash(MemoryMedium()),
            lock_identity(site.api, door_id),
            cloud_public,
            config=ControllerConfig(),
            clock=loop.time,
            wall_time=site.api.world.now + drift.get(name, 0),
            random=counting_random(f"time sync lock {door_id}"),
        )
        site.locks[door_id] = runtime
        site.energised[door_id] = []
        site.doors[door_id] = BleDoor.on_link(
            runtime, site.link, on_energise=site.energised[door_id].append
        )
        await site.doors[door_id].start()


@pytest.fixture
async def site(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    database_url: str,  # noqa: F811
) -> AsyncIterator[Site]:
    drift: dict[str, int] = getattr(request, "param", {})
    with open_api(database_url) as api:
        made = Site(api, tmp_path)
        await start_locks(made, drift)
        try:
            yield made
        finally:
            await made.close()


async def ana_at_home(site: Site) -> Phone:
    """Ana's card active, her phone logged in and both offline doors synced by it."""
    activate(site.api, MAYA, ANA, "card-1")
    sync_online_doors(site)
    phone = await site.phone(ANA)
    await phone.login(site.api.tokens[ANA])
    await phone.prefetch()
    for name in OFFLINE:
        await visit(phone, site.door(name), unlock=False)
    return phone


def lock_time(site: Site, name: str) -> int:
    runtime = site.locks[site.door(name)]
    return runtime.controller.lock_time(runtime.clock())


def lock_epoch(site: Site, name: str) -> int:
    return site.locks[site.door(name)].controller.state.cloud.epoch


def cloud_counter(site: Site, name: str) -> int:
    with site.api.world.service() as cloud:
        door = cloud.session.get(Door, site.door(name))
        assert door is not None
        return door.time_sync_seq


def relay(site: Site, name: str, frame: bytes) -> list[ErrorMessage]:
    """A relay hands ``frame`` to the lock outside any session of its own; its ERRORs."""
    actions = site.locks[site.door(name)].handle(FrameReceived(RELAY, frame))
    messages = [decode_message(a.frame) for a in actions if isinstance(a, Send)]
    return [m for m in messages if isinstance(m, ErrorMessage)]


def rotate_key(site: Site) -> None:
    """``door-cloud rotate-key`` on the served database (migrated first: it is stamped)."""
    url = site.api.world.engine.url.render_as_string(hide_password=False)
    migrate(engine=site.api.world.engine)
    assert door_cloud(["rotate-key", "--database", url]) == 0


# --- time sync ---------------------------------------------------------------------------------


async def logged_in(site: Site) -> Phone:
    """Ana's card active and her phone logged in with the bundles prefetched (no visit yet)."""
    activate(site.api, MAYA, ANA, "card-1")
    sync_online_doors(site)
    phone = await site.phone(ANA)
    await phone.login(site.api.tokens[ANA])
    assert (await phone.prefetch()).online
    return phone


@pytest.mark.parametrize("site", [{"Tower basement": DRIFT_S}], indirect=True)
async def test_a_drifted_lock_is_corrected_by_a_visit_with_a_challenge_bound_time_sync(
    site: Site,
) -> None:
    phone = await logged_in(site)
    now = site.api.world.now
    assert abs(lock_time(site, "Tower basement") - now - DRIFT_S) <= 2

    synced = await visit(phone, site.door("Tower basement"), unlock=False)
    report = synced.report
    assert report.bundle_sent and report.version_after == 1
    assert report.clock_offset_s is not None and abs(report.clock_offset_s - DRIFT_S) <= 3
    assert report.time_synced and report.time_sync_skipped is None
    assert report.time_sync_refused is None and report.bundle_refused is None
    assert abs(lock_time(site, "Tower basement") - now) <= 2
    assert site.locks[site.door("Tower basement")].controller.state.time_sync_seq == 1
    assert cloud_counter(site, "Tower basement") == 1

    frame = report.time_sync_frame
    assert frame is not None
    sync = decode_message(frame)
    assert isinstance(sync, TimeSync) and sync.sequence == 1
    replay = relay(site, "Tower basement", frame)  # the same frame, later
    assert [(e.code.name, e.about_type) for e in replay] == [("STALE", MessageType.TIME_SYNC)]

    # A fresh sequence bound to that (consumed) challenge is refused too: only the lock's
    # own unused challenge makes a bound sync fresh.
    path = f"/v1/phones/doors/{site.door('Tower basement')}/time-sync"
    body = {"challenge": sync.challenge.hex(), "lock_time": now - 900}
    late = ok(site.api.post(path, phone.cloud.token, json=body))
    assert late["sequence"] == 2
    refusal = relay(site, "Tower basement", bytes.fromhex(late["frame"]))
    assert [e.code.name for e in refusal] == ["STALE"]
    assert abs(lock_time(site, "Tower basement") - now) <= 2

    again = await visit(phone, site.door("Tower basement"))  # the clock is right now
    assert again.report.opened and again.first is None
    assert again.report.time_sync_frame is None and again.report.time_sync_skipped is None
    assert cloud_counter(site, "Tower basement") == 2


@pytest.mark.parametrize("site", [{"Tower gym": -DRIFT_S}], indirect=True)
async def test_a_lock_behind_refuses_a_fresh_credential_until_the_visit_corrects_its_clock(
    site: Site,
) -> None:
    phone = await logged_in(site)  # the credential is valid from now - 300 s: not yet there
    at_door = await visit(phone, site.door("Tower gym"))
    first = at_door.first
    assert first is not None and first.reason is Reason.CREDENTIAL_EXPIRED
    assert first.time_synced and first.version_after == 1
    assert abs(lock_time(site, "Tower gym") - site.api.world.now) <= 2
    assert at_door.report.reason is Reason.GRANTED and at_door.report.opened
    assert not at_door.report.time_synced  # the second session found the clock right


@pytest.mark.parametrize("site", [{"Tower basement": DRIFT_S}], indirect=True)
async def test_an_offline_phone_sends_no_time_sync_and_the_visit_still_succeeds(
    site: Site, no_signal: str
) -> None:
    await logged_in(site)
    offline = await site.phone(ANA, cloud_url=no_signal)
    at_door = await visit(offline, site.door("Tower basement"))
    assert at_door.report.opened and at_door.report.reason is Reason.GRANTED
    for report in (at_door.first, at_door.report):
        assert report is not None
        assert not report.time_synced and report.time_sync_frame is None
        assert report.time_sync_skipped is not None
        assert report.time_sync_skipped.startswith("offline")
    assert at_door.drain.offline
    assert site.locks[site.door("Tower basement")].controller.state.time_sync_seq == 0
    assert abs(lock_time(site, "Tower basement") - site.api.world.now - DRIFT_S) <= 3
    assert cloud_counter(site, "Tower basement") == 0


# --- key rotation -------------------------------------------------------------------------------


async def test_a_rotation_prefetched_online_reaches_a_lock_offline_and_old_forms_then_fail(
    site: Site, no_signal: str
) -> None:
    online = await ana_at_home(site)
    rotate_key(site)
    assert (await online.prefetch()).online
    assert online.store.newest_rotation_epoch() == 1

    offline = await site.phone(ANA, cloud_url=no_signal)
    carried = await visit(offline, site.door("Tower basement"))
    report = carried.report
    assert report.opened  # the old credential still opens: the rotation comes after AUTH
    assert (report.key_epoch_before, report.key_epoch_after) == (0, 1)
    assert report.rotations_delivered == 1 and report.rotation_refused is None
    assert report.credential_outdated
    assert lock_epoch(site, "Tower basement") == 1
    assert lock_epoch(site, "Tower gym") == 0  # no phone has been there since

    stale = await visit(offline, site.door("Tower basement"))
    assert stale.report.reason is Reason.BAD_SIGNATURE and not stale.report.opened
    assert stale.report.rotations_delivered == 0  # the lock is at the phone's newest epoch

    old_key = ed25519_private_from_seed(CLOUD_SEED)  # epoch 0: no longer trusted there
    old_sync = TimeSync(
        door_id=bytes.fromhex(site.door("Tower basement")),
        key_epoch=0,
        sequence=1000,
        cloud_time=site.api.world.now,
    ).signed(old_key)
    refusal = relay(site, "Tower basement", old_sync.to_frame())
    assert [(e.code.name, e.about_type) for e in refusal] == [
        ("AUTH_FAILED", MessageType.TIME_SYNC)
    ]

    await online.login(site.api.tokens[ANA])  # a fresh credential, signed at epoch 1
    renewed = await visit(offline, site.door("Tower basement"))  # same store: new credential
    assert renewed.report.reason is Reason.GRANTED and renewed.report.opened
    assert renewed.report.credential_epoch == 1 and not renewed.report.credential_outdated


async def test_a_lock_two_epochs_behind_gets_both_rotations_in_order_before_auth(
    site: Site, no_signal: str
) -> None:
    online = await ana_at_home(site)
    rotate_key(site)
    rotate_key(site)
    await online.login(site.api.tokens[ANA])  # signed at epoch 2: the lock must rotate first
    await online.prefetch()
    assert [epoch for epoch, _ in online.store.rotations(after=0)] == [1, 2]

    offline = await site.phone(ANA, cloud_url=no_signal)
    at_door = await visit(offline, site.door("Tower gym"))
    report = at_door.report
    assert (report.key_epoch_before, report.key_epoch_after) == (0, 2)
    assert report.rotations_delivered == 2 and report.errors == []
    assert not report.audit_ack_delivered  # signed at epoch 0: kept, not sent
    assert report.reason is Reason.GRANTED and report.opened  # AUTH after the rotations
    assert lock_epoch(site, "Tower gym") == 2
    state = site.locks[site.door("Tower gym")].controller.state
    with site.api.world.service() as cloud:
        assert state.cloud.public_key == cloud.key.public

    for _, frame in online.store.rotations(after=0):  # replays change nothing
        replayed = relay(site, "Tower gym", frame)
        assert [e.code.name for e in replayed] in ([], ["KEY_ROTATION_ORDER"])
    assert lock_epoch(site, "Tower gym") == 2


@pytest.mark.parametrize("site", [{"Tower basement": DRIFT_S}], indirect=True)
async def test_a_time_sync_signed_after_a_rotation_the_phone_lacks_brings_that_rotation(
    site: Site,
) -> None:
    phone = await logged_in(site)
    assert phone.store.newest_rotation_epoch() == 0
    rotate_key(site)  # after the prefetch: the phone holds no rotation to epoch 1

    report = (await visit(phone, site.door("Tower basement"), unlock=False)).report
    assert phone.store.newest_rotation_epoch() == 1  # fetched with the TIME_SYNC
    assert report.rotations_delivered == 1 and report.key_epoch_after == 1
    assert report.time_synced and report.time_sync_refused is None
    sync = decode_message(report.time_sync_frame or b"")
    assert isinstance(sync, TimeSync) and sync.key_epoch == 1
    assert lock_epoch(site, "Tower basement") == 1
    assert abs(lock_time(site, "Tower basement") - site.api.world.now) <= 2


# --- the parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("connect_timeout_s", 0),
        ("answer_timeout_s", -1.0),
        ("audit_quiet_s", float("nan")),
        ("disconnect_timeout_s", float("inf")),
        ("silent_accept_s", 0.0),
        ("time_sync_timeout_s", "5"),
        ("connect_backoff_s", -0.1),
        ("clock_tolerance_s", -2),
        ("connect_attempts", 0),
        ("connect_attempts", 1.5),
        ("connect_attempts", True),
    ],
)
def test_visit_config_refuses_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^VisitConfig\.{field} must be"):
        VisitConfig(**{field: value})  # type: ignore[arg-type]


def test_visit_config_accepts_its_defaults_and_zero_tolerance() -> None:
    assert VisitConfig(clock_tolerance_s=0, connect_backoff_s=0).connect_attempts == 3


def test_the_store_keeps_rotations_by_epoch_in_order_and_refuses_other_frames(
    tmp_path: Path,
) -> None:
    keys = [ed25519_private_from_seed(bytes([n]) * 32) for n in range(4)]
    frames = [
        KeyRotation.create(current_key=keys[n - 1], new_key=keys[n], new_epoch=n).to_frame()
        for n in (1, 2, 3)
    ]
    store = PhoneStore(tmp_path / "phone.sqlite")
    assert store.newest_rotation_epoch() == 0
    assert store.keep_rotations([frames[1], frames[0]], now=1) == 2
    assert store.keep_rotations(frames, now=2) == 1  # only epoch 3 is new
    assert store.rotations(after=0) == [(1, frames[0]), (2, frames[1]), (3, frames[2])]
    assert store.rotations(after=1, up_to=2) == [(2, frames[1])]
    other = TimeSync(door_id=bytes(16), key_epoch=0, sequence=1, cloud_time=0).signed(keys[0])
    with pytest.raises(StoreError, match="not a KEY_ROTATION frame"):
        store.keep_rotations([frames[0], other.to_frame()], now=3)
    with pytest.raises(StoreError, match="not a key rotation frame"):
        store.keep_rotations([b"garbage"], now=3)
    assert PhoneStore(store.path).newest_rotation_epoch() == 3  # kept across a restart
