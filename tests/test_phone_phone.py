"""The phone object's rules (``phone_bridge.phone``) against a scripted cloud.

Theory of operation: the cloud is an ``httpx.MockTransport`` that answers each call as the
test scripts it (an answer, a refusal with a reason, or no answer at all), so each drain
and login rule is shown on its own; the store is a real SQLite file, and "a restart" is a
new :class:`Phone` on the same file. The whole flow with the real cloud and real locks is
``tests.test_phone_end_to_end``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from phone_bridge.cloud_client import CloudClient
from phone_bridge.phone import (
    NotLoggedInError,
    Phone,
    PhoneOfflineError,
    PhoneRefusedError,
)
from phone_bridge.store import PhoneStore, StoreError, UploadKind
from phone_bridge.visit import ClientFactory
from protocol import AuditAck
from protocol.crypto import ed25519_private_from_seed
from simulators.fixture import World, fixed_bytes

NOW = 1_800_000_000
DOOR = fixed_bytes("phone test door", 16)
KEY = ed25519_private_from_seed(fixed_bytes("phone test key"))
WORLD = World()
Handler = Callable[[httpx.Request], httpx.Response]


def ack_frame(up_to_seq: int, door: bytes = DOOR) -> bytes:
    return (
        AuditAck(door_id=door, key_epoch=0, up_to_seq=up_to_seq).signed(WORLD.cloud_key).to_frame()
    )


def problem(status: int, detail: str) -> httpx.Response:
    body = {"type": "about:blank", "title": "Refused", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


LOGIN = {
    "phone_id": "ab" * 16,
    "token": "phone-token",
    "credential": "c0ffee",
    "valid_from": NOW,
    "valid_until": NOW + 86_400,
    "doors": [DOOR.hex()],
}


async def no_doors(door_id: str) -> ClientFactory:
    raise AssertionError(f"no door is visited here ({door_id})")


def make_phone(store: PhoneStore, handler: Handler) -> Phone:
    cloud = CloudClient("http://cloud.test", transport=httpx.MockTransport(handler))
    return Phone(key=KEY, store=store, cloud=cloud, doors=no_doors, wall_time=lambda: NOW)


def answering(answers: dict[bytes, Any], calls: list[bytes]) -> Handler:
    """Uploads answered by frame: a response, an exception to raise, or an ack up-to-seq."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/phones/login":
            return httpx.Response(201, json=LOGIN)
        assert request.headers["authorization"] == "Bearer phone-token"
        frame = bytes.fromhex(json.loads(request.content)["frame"])
        calls.append(frame)
        answer = answers[frame]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return httpx.Response(200, json={"door_id": DOOR.hex(), "ack": ack_frame(answer).hex()})
        assert isinstance(answer, httpx.Response)
        return answer

    return handle


@pytest.fixture
def store(tmp_path: Path) -> PhoneStore:
    return PhoneStore(tmp_path / "phone.sqlite")


def queue(store: PhoneStore, *items: tuple[UploadKind, bytes]) -> None:
    for kind, frame in items:
        store.enqueue(kind, DOOR.hex(), frame, now=NOW)


RECEIPT_OK = httpx.Response(200, json={"door_id": DOOR.hex(), "pending": False})


async def test_login_is_kept_and_a_restarted_phone_is_still_logged_in(store: PhoneStore) -> None:
    phone = make_phone(store, answering({}, []))
    with pytest.raises(NotLoggedInError, match=r"^drain: log the phone in first"):
        await phone.drain()
    with pytest.raises(NotLoggedInError, match=r"^visit: "):
        await phone.visit(DOOR.hex())
    await phone.login("resident-token")
    restarted = make_phone(store, answering({}, []))
    held = restarted.logged_in
    assert held is not None and held.token == "phone-token" and held.credential == b"\xc0\xff\xee"
    assert restarted.cloud.token == "phone-token" and held.logged_in_at == NOW


async def test_login_refused_or_unreachable_is_typed_and_names_the_step(
    store: PhoneStore,
) -> None:
    refused = make_phone(store, lambda _r: problem(403, "activate your keycard first"))
    with pytest.raises(PhoneRefusedError, match=r"^login: .*403 activate") as caught:
        await refused.login("resident-token")
    assert caught.value.status == 403 and caught.value.step == "login"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    with pytest.raises(PhoneOfflineError, match=r"^login: "):
        await make_phone(store, down).login("resident-token")
    assert store.login() is None


async def test_drain_drops_a_refused_item_and_keeps_the_acks(store: PhoneStore) -> None:
    answers: dict[bytes, Any] = {
        b"receipt 1": RECEIPT_OK,
        b"forged": problem(422, "the signature does not verify"),
        b"audit 1": 7,
        b"audit 2": 9,
    }
    calls: list[bytes] = []
    phone = make_phone(store, answering(answers, calls))
    await phone.login("resident-token")
    queue(
        store,
        (UploadKind.RECEIPT, b"receipt 1"),
        (UploadKind.RECEIPT, b"forged"),
        (UploadKind.AUDIT, b"audit 1"),
        (UploadKind.AUDIT, b"audit 2"),
    )
    result = await phone.drain()
    assert calls == [b"receipt 1", b"forged", b"audit 1", b"audit 2"]  # oldest first
    assert result.uploaded == 3 and result.acks_kept == 2 and not result.offline
    assert [(item.frame, error.status) for item, error in result.refused] == [(b"forged", 422)]
    assert store.uploads() == [] and store.ack_for(DOOR.hex()) == ack_frame(9)


async def test_an_unreachable_cloud_stops_the_drain_and_keeps_the_rest_in_order(
    store: PhoneStore,
) -> None:
    lost = httpx.ConnectError("no signal")
    answers: dict[bytes, Any] = {b"receipt 1": RECEIPT_OK, b"receipt 2": lost}
    calls: list[bytes] = []
    phone = make_phone(store, answering(answers, calls))
    await phone.login("resident-token")
    queue(
        store,
        (UploadKind.RECEIPT, b"receipt 1"),
        (UploadKind.RECEIPT, b"receipt 2"),
        (UploadKind.AUDIT, b"audit 1"),
    )
    result = await phone.drain()
    assert result.offline and result.uploaded == 1 and result.waiting == 2
    assert calls == [b"receipt 1", b"receipt 2"]
    assert [u.frame for u in store.uploads()] == [b"receipt 2", b"audit 1"]

    answers.update({b"receipt 2": RECEIPT_OK, b"audit 1": 3})
    again = await phone.drain()
    assert again.uploaded == 2 and not again.offline and store.uploads() == []


async def test_a_refused_token_stops_the_drain_and_drops_nothing(store: PhoneStore) -> None:
    answers: dict[bytes, Any] = {b"receipt 1": problem(401, "the phone token expired")}
    phone = make_phone(store, answering(answers, []))
    await phone.login("resident-token")
    queue(store, (UploadKind.RECEIPT, b"receipt 1"))
    with pytest.raises(PhoneRefusedError, match=r"^drain: .*401") as caught:
        await phone.drain()
    assert caught.value.status == 401
    assert [u.frame for u in store.uploads()] == [b"receipt 1"]


async def test_prefetch_refused_names_the_step(store: PhoneStore) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/phones/login":
            return httpx.Response(201, json=LOGIN)
        return problem(401, "the phone token expired")

    phone = make_phone(store, handle)
    await phone.login("resident-token")
    with pytest.raises(PhoneRefusedError, match=r"^prefetch: .*expired"):
        await phone.prefetch()


# --- the store's ack table --------------------------------------------------------------


def test_an_older_ack_never_replaces_a_newer_one(store: PhoneStore) -> None:
    door = DOOR.hex()
    assert store.keep_ack(door, ack_frame(5), now=NOW)
    assert not store.keep_ack(door, ack_frame(4), now=NOW)
    assert store.ack_for(door.upper()) == ack_frame(5)
    store.delivered_ack(door, ack_frame(4))  # not the held one: nothing happens
    assert store.ack_for(door) == ack_frame(5)
    store.delivered_ack(door, ack_frame(5))
    assert store.ack_for(door) is None


def test_the_ack_table_refuses_what_is_not_an_ack_for_that_door(store: PhoneStore) -> None:
    with pytest.raises(StoreError, match="addressed to"):
        store.keep_ack(DOOR.hex(), ack_frame(1, door=bytes(16)), now=NOW)
    with pytest.raises(StoreError, match="not an audit ack frame"):
        store.keep_ack(DOOR.hex(), b"LK\x01garbage", now=NOW)
    assert store.ack_for(DOOR.hex()) is None


async def test_prefetch_keeps_the_bundles_when_the_rotations_cannot_be_had(
    store: PhoneStore,
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/phones/login":
            return httpx.Response(201, json=LOGIN)
        if request.url.path == "/v1/phones/bundles":
            return httpx.Response(200, json={"bundles": {}})
        return problem(404, "no such route on this cloud")  # an older cloud: no rotations

    phone = make_phone(store, handle)
    await phone.login("resident-token")
    result = await phone.prefetch()
    assert result.online and result.doors == ()
