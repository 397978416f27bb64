"""The phone's cloud client (``phone_bridge.cloud_client``) against the real served API.

Theory of operation: the seeded cloud world of ``tests.test_cloud_api`` is served by a
real uvicorn on localhost; the client logs a phone in, fetches the bundles of the doors
behind, gives them to the doors' real lock controllers and uploads what the locks hand
back, from the phone's store-and-forward queue. Refusals (4xx with a reason) and an
unreachable cloud are told apart, since the phone queues on one and not on the other.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.events import MQTT, Connected, FrameReceived, Send
from phone_bridge.cloud_client import (
    CloudClient,
    CloudClientError,
    CloudRefusedError,
    CloudUnreachableError,
    UploadAnswer,
)
from phone_bridge.store import PhoneStore, Upload, UploadKind
from protocol import AuditAck, MessageType, MobileCredential
from protocol.crypto import ed25519_private_from_seed, ed25519_public_from_bytes, public_bytes
from protocol.frame import decode_frame
from simulators.fixture import fixed_bytes
from tests.test_cloud_api import ANA, MAYA, TOWER, Api, activate, open_api

NOW = 1_800_000_000
PHONE_KEY = ed25519_private_from_seed(fixed_bytes("phone client test"))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(f"sqlite:///{tmp_path / 'cloud.db'}") as served:
        yield served


def base_url(api: Api) -> str:
    return str(api.http.base_url).rstrip("/")


async def test_a_phone_logs_in_carries_bundles_and_uploads_through_its_queue(
    api: Api, tmp_path: Path
) -> None:
    activate(api, MAYA, ANA, "card-1")
    store = PhoneStore(tmp_path / "phone.db")
    async with CloudClient(base_url(api)) as cloud:
        login = await cloud.login(api.tokens[ANA], public_bytes(PHONE_KEY))
        with api.world.service() as service:
            cloud_public = service.key.public
        credential = MobileCredential.verified_from_bytes(
            login.credential, ed25519_public_from_bytes(cloud_public)
        )
        assert credential.phone_public_key == public_bytes(PHONE_KEY)
        assert set(login.doors) == {api.door(n) for n in TOWER} and cloud.token == login.token

        store.keep_bundles(await cloud.bundles(), now=NOW)
        assert {b.door_id for b in store.bundles()} == {api.door(n) for n in TOWER}
        for door_id in sorted(api.door(n) for n in TOWER):
            lock = api.world.locks[door_id]
            frame = store.bundle_for(door_id, lock.state.held.version)
            assert frame is not None
            for action in lock.handle(FrameReceived(MQTT, frame), float(NOW)):
                if isinstance(action, Send) and _type(action.frame) == MessageType.RECEIPT:
                    store.enqueue(UploadKind.RECEIPT, door_id, action.frame, now=NOW)
        answers: list[UploadAnswer] = []
        assert await _drain(store, cloud, answers) == 3
        assert [a.pending for a in answers] == [False] * 3
        assert await cloud.bundles() == {}  # every door is in sync now


async def test_an_audit_upload_returns_the_ack_frame_for_the_lock(api: Api) -> None:
    activate(api, MAYA, ANA, "card-1")
    lobby = api.door("Tower lobby")
    lock = api.world.locks[lobby]
    batches = [
        a.frame
        for a in lock.handle(Connected(MQTT), float(NOW))
        if isinstance(a, Send) and _type(a.frame) == MessageType.AUDIT_BATCH
    ]
    assert batches
    async with CloudClient(base_url(api)) as cloud:
        await cloud.login(api.tokens[ANA], public_bytes(PHONE_KEY))
        answer = await cloud.upload(_upload(UploadKind.AUDIT, lobby, batches[0]))
    assert answer.ack_frame is not None
    _, kind, payload = decode_frame(answer.ack_frame)
    assert kind == MessageType.AUDIT_ACK and AuditAck.from_bytes(payload).up_to_seq >= 1


async def test_refusals_carry_the_clouds_reason_and_are_not_unreachable(api: Api) -> None:
    async with CloudClient(base_url(api)) as cloud:
        with pytest.raises(CloudClientError, match="log the phone in first"):
            await cloud.bundles()
        with pytest.raises(CloudRefusedError) as refused:
            await cloud.login("not-a-token", public_bytes(PHONE_KEY))
        assert refused.value.status == 401 and refused.value.detail
        with pytest.raises(CloudRefusedError) as first_use:  # no active keycard yet
            await cloud.login(api.tokens[ANA], public_bytes(PHONE_KEY))
        assert first_use.value.status == 403 and "activate" in first_use.value.detail
        activate(api, MAYA, ANA, "card-1")
        await cloud.login(api.tokens[ANA], public_bytes(PHONE_KEY))
        lobby = api.door("Tower lobby")
        with pytest.raises(CloudRefusedError) as garbage:
            await cloud.upload(_upload(UploadKind.RECEIPT, lobby, b"LK\x01garbage"))
        assert 400 <= garbage.value.status < 500


async def test_an_unreachable_cloud_is_told_apart(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    async with CloudClient(f"http://127.0.0.1:{closed}", token="t", timeout=2) as cloud:
        with pytest.raises(CloudUnreachableError, match="fetch bundles: the cloud did not answer"):
            await cloud.bundles()
    with pytest.raises(ValueError, match="http://"):
        CloudClient("ftp://example.invalid")

    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="down for maintenance")

    async with CloudClient(
        "http://cloud.invalid", token="t", transport=httpx.MockTransport(failing)
    ) as cloud:
        with pytest.raises(CloudUnreachableError, match="503"):
            await cloud.bundles()


# --- helpers ----------------------------------------------------------------------------


def _type(frame: bytes) -> int:
    return decode_frame(frame)[1]


def _upload(kind: UploadKind, door_id: str, frame: bytes) -> Upload:
    return Upload(id=0, kind=kind, door_id=door_id, frame=frame, queued_at=NOW)


async def _drain(store: PhoneStore, cloud: CloudClient, answers: list[UploadAnswer]) -> int:
    """Upload the queue oldest first, taking each off only once the cloud has it."""
    done = 0
    for item in store.uploads():
        answers.append(await cloud.upload(item))
        store.uploaded(item)
        done += 1
    return done
