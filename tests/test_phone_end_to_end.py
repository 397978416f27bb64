"""Phones end to end, real parts only: cloud over HTTP, offline locks on bumble's radio.

Theory of operation: the seeded cloud world (``tests.cloud_world.CloudWorld``) is served by
uvicorn on localhost (``tests.test_cloud_api.open_api``). Its offline doors (Tower basement,
Tower gym) become real :class:`controller.ble_door.BleDoor` faces over provisioned
:class:`controller.runtime.LockRuntime` instances on one :class:`infra.radio.RadioLink`,
with the very identities the cloud registered (``CloudWorld`` derives them
deterministically; :func:`lock_identity` derives them again and checks the public keys
against the cloud's database). The online lobby stays the world's MQTT controller. Each
resident's phone is a :class:`phone_bridge.phone.Phone`: its own SQLite store, a
``CloudClient`` over TCP and ``BleakScanner`` / ``BleakClient`` with the bumble backends on
its own radio. Keycards are tapped on a lock's reader: ``CardTapped``, the lock's
challenge, the card's CMAC answer.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bumble.device import Device
from sqlalchemy import select

from cloud.models import Door, Keycard
from controller.ble_door import BleDoor
from controller.config import ControllerConfig
from controller.events import CardAnswered, CardChallenge, CardTapped, Energise
from controller.identity import LockIdentity
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from infra.radio import RadioLink, device_on_link
from phone_bridge.bleak_bumble import bumble_backends
from phone_bridge.cloud_client import CloudClient
from phone_bridge.phone import BleakDoors, NotLoggedInError, Phone, PhoneVisit
from phone_bridge.store import PhoneStore, UploadKind
from protocol import Reason
from protocol.crypto import ed25519_private_from_seed
from protocol.keycard import card_response
from simulators.fixture import counting_random, fixed_bytes
from tests.test_ble_door import no_errors_logged  # noqa: F401  (autouse: the doors log no error)
from tests.test_cloud_api import ANA, BEN, MAYA, Api, activate, card_status, ok, open_api

OFFLINE = ("Tower basement", "Tower gym")
WAIT = 20.0
"""Upper bound of one phone step (the radio and localhost answer in milliseconds)."""


@dataclass
class Site:
    """The served cloud, its offline doors on one radio, and the phones built so far."""

    api: Api
    tmp_path: Path
    link: RadioLink = field(default_factory=RadioLink)
    locks: dict[str, LockRuntime] = field(default_factory=dict)
    doors: dict[str, BleDoor] = field(default_factory=dict)
    energised: dict[str, list[int]] = field(default_factory=dict)
    radios: list[Device] = field(default_factory=list)
    clients: list[CloudClient] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return str(self.api.http.base_url).rstrip("/")

    def door(self, name: str) -> str:
        return self.api.door(name)

    async def start_locks(self) -> None:
        with self.api.world.service() as cloud:
            cloud_public = cloud.key.public
        loop = asyncio.get_running_loop()
        for name in OFFLINE:
            door_id = self.door(name)
            runtime = LockRuntime.provision(
                Flash(MemoryMedium()),
                lock_identity(self.api, door_id),
                cloud_public,
                config=ControllerConfig(),
                clock=loop.time,
                wall_time=self.api.world.now,
                random=counting_random(f"e2e lock {door_id}"),
            )
            self.locks[door_id] = runtime
            self.energised[door_id] = []
            self.doors[door_id] = BleDoor.on_link(
                runtime,
                self.link,
                on_energise=self.energised[door_id].append,
                advertising_interval_ms=20.0,
            )
            await self.doors[door_id].start()

    async def phone(self, who: str, *, cloud_url: str | None = None, label: str = "") -> Phone:
        """``who``'s phone (a new radio; the store file is ``who``'s, so it outlives it)."""
        number = len(self.radios) + 1
        radio = device_on_link(self.link, f"{who}'s phone", f"F0:00:00:00:01:{number:02X}")
        await radio.power_on()
        self.radios.append(radio)
        cloud = CloudClient(cloud_url or self.base_url, timeout=5)
        self.clients.append(cloud)
        scanner_kwargs, client_kwargs = bumble_backends(radio)
        return Phone(
            key=ed25519_private_from_seed(fixed_bytes(f"e2e phone {who}")),
            store=PhoneStore(self.tmp_path / f"{who.replace(' ', '_')}{label}.sqlite"),
            cloud=cloud,
            doors=BleakDoors(scanner_kwargs, client_kwargs, scan_timeout_s=WAIT),
            wall_time=lambda: self.api.world.now,
        )

    async def close(self) -> None:
        for cloud in self.clients:
            await cloud.aclose()
        for door in self.doors.values():
            await door.stop()
        for radio in self.radios:
            await radio.power_off()

    def tap(self, door_name: str, card_label: str) -> bool:
        """Tap the keycard on the door's reader; whether the lock opened."""
        runtime = self.locks[self.door(door_name)]
        uid_hex, _ = self.api.card(card_label)
        uid = bytes.fromhex(uid_hex)
        with self.api.world.service() as cloud:
            key = cloud.session.scalars(
                select(Keycard.card_key).where(Keycard.uid == uid_hex)
            ).one()
        (challenge,) = [a for a in runtime.handle(CardTapped(uid)) if isinstance(a, CardChallenge)]
        answer = card_response(key, uid, challenge.challenge)
        return any(isinstance(a, Energise) for a in runtime.handle(CardAnswered(uid, answer)))

    def pending_doors(self, who: str) -> set[str]:
        return {d["name"] for d in card_status(self.api, MAYA, who)["pending_doors"]}

    def door_pending(self, name: str) -> bool:
        return bool(ok(self.api.get(f"/v1/doors/{self.door(name)}", MAYA))["pending"])


def lock_identity(api: Api, door_id: str) -> LockIdentity:
    """The identity ``CloudWorld`` generated for *door_id* (its keys checked against the cloud)."""
    identity = LockIdentity.generate(
        door_id=bytes.fromhex(door_id),
        property_id=bytes(16),
        doorcode_secret=fixed_bytes(f"code {door_id}"),
        random=counting_random(f"lock {door_id}"),
    )
    with api.world.service() as cloud:
        door = cloud.session.get(Door, door_id)
        assert door is not None and not door.online
        assert (door.identity_public, door.sealing_public) == (
            identity.identity_public,
            identity.sealing_public,
        )
    return identity


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    with open_api(f"sqlite:///{tmp_path / 'cloud.db'}") as api:
        made = Site(api, tmp_path)
        await made.start_locks()
        try:
            yield made
        finally:
            await made.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A localhost port nothing listens on (the cloud out of reach)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


async def visit(phone: Phone, door_id: str, **kwargs: Any) -> PhoneVisit:
    async with asyncio.timeout(WAIT):
        return await phone.visit(door_id, **kwargs)


def sync_online_doors(site: Site) -> None:
    """The online lobby syncs over MQTT (the world's controller), as it would on its own."""
    site.api.world.sync_door(site.door("Tower lobby"))


# --- activation reaches the offline doors through the phone ------------------------------


async def test_phone_visits_clear_activation_pending_then_the_card_opens(site: Site) -> None:
    activate(site.api, MAYA, ANA, "card-1")
    sync_online_doors(site)
    assert card_status(site.api, MAYA, ANA)["status"] == "activation pending"
    assert site.pending_doors(ANA) == set(OFFLINE)

    phone = await site.phone(ANA)
    with pytest.raises(NotLoggedInError, match=r"^prefetch: log the phone in first"):
        await phone.prefetch()
    await phone.login(site.api.tokens[ANA])
    assert ok(site.api.get(f"/v1/people/{site.api.person(ANA)}", MAYA))["app_logged_in"]
    prefetched = await phone.prefetch()
    assert prefetched.online and set(prefetched.doors) == {site.door(n) for n in OFFLINE}
    basement, gym = (site.door(n) for n in OFFLINE)
    assert not site.tap("Tower gym", "card-1")  # the lock does not know the card yet

    first = await visit(phone, basement)
    carried = first.first  # the lock learnt of Ana from the bundle this very visit carried
    assert carried is not None and carried.reason is Reason.UNKNOWN_CREDENTIAL
    assert (carried.version_before, carried.version_after) == (0, 1) and carried.receipt
    assert first.report.reason is Reason.GRANTED and first.report.opened
    assert not first.report.bundle_sent and first.report.version_before == 1
    assert site.energised[basement] == [ControllerConfig().unlock_seconds]
    batches = len(carried.audit_batches) + len(first.report.audit_batches)
    assert first.drain.uploaded == 1 + batches
    assert not first.drain.offline and first.drain.refused == []
    assert phone.store.uploads() == [] and first.drain.acks_kept >= 1
    assert site.pending_doors(ANA) == {"Tower gym"}
    assert card_status(site.api, MAYA, ANA)["status"] == "activation pending"

    restarted = await site.phone(ANA)  # the phone bridge restarts: same store file
    assert restarted.logged_in is not None
    second = await visit(restarted, gym, unlock=False)  # a manual sync: no second session
    assert second.first is None and second.report.reason is Reason.UNKNOWN_CREDENTIAL
    assert site.energised[gym] == [] and second.report.version_after == 1
    card = card_status(site.api, MAYA, ANA)
    assert card["status"] == "active" and card["pending_doors"] == []
    assert site.tap("Tower gym", "card-1") and site.tap("Tower basement", "card-1")

    ack = restarted.store.ack_for(basement)
    assert ack is not None
    again = await visit(restarted, basement)  # the held AUDIT_ACK goes back to the lock
    assert again.report.audit_ack_delivered and again.report.errors == []
    assert not again.report.bundle_sent
    assert restarted.store.ack_for(basement) != ack  # the next batch's ack replaced it
    assert (await restarted.prefetch()).doors == ()


# --- another resident's phone carries a revocation ----------------------------------------


async def test_lost_card_is_refused_at_a_ble_door_after_another_residents_visit(
    site: Site,
) -> None:
    activate(site.api, MAYA, ANA, "card-4")
    activate(site.api, MAYA, BEN, "card-6")
    sync_online_doors(site)
    ana = await site.phone(ANA)
    await ana.login(site.api.tokens[ANA])
    await ana.prefetch()
    for name in OFFLINE:
        await visit(ana, site.door(name), unlock=False)
    assert site.pending_doors(ANA) == set() and site.pending_doors(BEN) == set()
    assert site.tap("Tower basement", "card-4") and site.tap("Tower gym", "card-4")

    lost_uid, _ = site.api.card("card-4")
    path = f"/v1/people/{site.api.person(ANA)}/keycards/{lost_uid}/lost"
    body = ok(site.api.post(path, MAYA, json={"replacement": site.api.card("card-5")[0]}))
    assert {d["name"] for d in body["doors_still_accepting"]} >= set(OFFLINE)
    sync_online_doors(site)

    ben = await site.phone(BEN)
    await ben.login(site.api.tokens[BEN])
    assert site.door("Tower basement") in (await ben.prefetch()).doors
    carried = await visit(ben, site.door("Tower basement"))
    assert carried.report.opened and carried.first is None
    before = carried.report.version_before
    assert before is not None and carried.report.version_after == before + 1
    assert not carried.drain.offline and carried.drain.refused == []

    assert not site.tap("Tower basement", "card-4")  # the revocation arrived by Ben's phone
    assert site.tap("Tower gym", "card-4")  # no phone has carried it there yet
    assert not site.door_pending("Tower basement") and site.door_pending("Tower gym")


# --- the phone has no signal at the door ---------------------------------------------------


async def test_offline_phone_applies_the_prefetched_bundle_and_uploads_later(
    site: Site, closed_port: int
) -> None:
    activate(site.api, MAYA, ANA, "card-1")
    sync_online_doors(site)
    online = await site.phone(ANA)
    await online.login(site.api.tokens[ANA])
    assert (await online.prefetch()).online

    offline = await site.phone(ANA, cloud_url=f"http://127.0.0.1:{closed_port}")
    refetched = await offline.prefetch()  # no signal: what was held stays held
    assert not refetched.online and set(refetched.doors) == {site.door(n) for n in OFFLINE}
    basement = site.door("Tower basement")
    at_door = await visit(offline, basement)
    assert at_door.first is not None and at_door.first.version_after == 1
    assert at_door.report.opened
    assert site.locks[basement].controller.state.held.version == 1
    assert at_door.drain.offline and at_door.drain.uploaded == 0
    queued = offline.store.uploads()
    assert at_door.drain.waiting == len(queued) >= 2
    assert queued[0].kind is UploadKind.RECEIPT
    assert site.pending_doors(ANA) == set(OFFLINE)  # the cloud has not heard yet

    back = await online.drain()  # back online: the queue drains in order, once
    assert back.uploaded == len(queued) and not back.offline and back.refused == []
    assert online.store.uploads() == []
    assert site.pending_doors(ANA) == {"Tower gym"}
    assert (await online.drain()).uploaded == 0
    assert site.locks[basement].controller.state.held.version == 1
