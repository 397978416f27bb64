"""The phone's persistent store (``phone_bridge.store``) on a real SQLite file.

Theory of operation: bundles are real sealed BUNDLE frames of a protocol
:class:`~protocol.CredentialHistory`; "a restart" is a new :class:`PhoneStore` on the
same file. Uploads are drained through a function that records what it was given and
can be told to fail, as a phone that loses its signal mid-drain.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from phone_bridge.store import PhoneStore, StoreError, Upload, UploadKind
from protocol import Credential, CredentialHistory, CredentialKind, Frame, MessageType
from simulators.fixture import World

WORLD = World()
NOW = 1_800_000_000


def bundle_frame(history: CredentialHistory, base: int) -> bytes:
    return history.bundle(
        base,
        door_public=X25519PrivateKey.generate().public_key(),
        cloud_key=WORLD.cloud_key,
        key_epoch=0,
        ephemeral=WORLD.ephemeral(os.urandom(8).hex()),
    ).to_frame()


def history_at(version: int) -> CredentialHistory:
    history = CredentialHistory(os.urandom(16))
    for _ in range(version):
        history.commit(
            upserts=[Credential(kind=CredentialKind.PERSON, credential_id=os.urandom(16))]
        )
    return history


def test_a_prefetched_bundle_serves_exactly_the_versions_it_spans(tmp_path: Path) -> None:
    history = history_at(5)
    door = history.current.door_id.hex()
    frame = bundle_frame(history, 2)
    PhoneStore(tmp_path / "phone.db").keep_bundles({door: frame}, now=NOW)

    store = PhoneStore(tmp_path / "phone.db")  # the phone bridge restarted
    assert [(b.door_id, b.base_version, b.target_version) for b in store.bundles()] == [
        (door, 2, 5)
    ]
    assert [store.bundle_for(door, held) for held in range(7)] == [
        None,
        None,
        frame,
        frame,
        frame,
        None,
        None,
    ]
    assert store.bundle_for(door.upper(), 3) == frame
    assert store.bundle_for("ab" * 16, 3) is None


def test_a_new_prefetch_replaces_the_old_one(tmp_path: Path) -> None:
    store = PhoneStore(tmp_path / "phone.db")
    first, second = history_at(1), history_at(2)
    store.keep_bundles(
        {h.current.door_id.hex(): bundle_frame(h, 0) for h in (first, second)}, now=NOW
    )
    store.keep_bundles({second.current.door_id.hex(): bundle_frame(second, 1)}, now=NOW + 60)
    held = store.bundles()
    assert [(b.door_id, b.base_version, b.fetched_at) for b in held] == [
        (second.current.door_id.hex(), 1, NOW + 60)
    ]


@pytest.mark.parametrize(
    "frame, reason",
    [
        (b"", "not a bundle frame"),
        (b"LK\x01garbage", "not a bundle frame"),
        (os.urandom(300), "not a bundle frame"),
        (Frame(type=MessageType.HELLO, payload=b"").to_bytes(), "not a BUNDLE frame"),
    ],
)
def test_garbage_is_refused_and_the_old_bundles_stay(
    tmp_path: Path, frame: bytes, reason: str
) -> None:
    store = PhoneStore(tmp_path / "phone.db")
    history = history_at(1)
    door = history.current.door_id.hex()
    good = bundle_frame(history, 0)
    store.keep_bundles({door: good}, now=NOW)
    with pytest.raises(StoreError, match=reason):
        store.keep_bundles({door: good, "cd" * 16: frame}, now=NOW + 1)
    assert store.bundle_for(door, 0) == good


def test_a_bundle_for_another_door_is_refused(tmp_path: Path) -> None:
    store = PhoneStore(tmp_path / "phone.db")
    frame = bundle_frame(history_at(1), 0)
    with pytest.raises(StoreError, match="addressed to"):
        store.keep_bundles({"ab" * 16: frame}, now=NOW)
    assert store.bundles() == []


def test_uploads_drain_in_order_exactly_once_across_failures_and_restarts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "phone.db"
    store = PhoneStore(path)
    queued = [
        store.enqueue(
            UploadKind.RECEIPT if n % 2 else UploadKind.AUDIT, "AB" * 16, bytes([n]), now=NOW + n
        )
        for n in range(6)
    ]
    assert queued == sorted(queued)
    sent: list[Upload] = []

    def signal_lost_after(count: int) -> Callable[[Upload], None]:
        def upload(item: Upload) -> None:
            if len(sent) >= count:
                raise ConnectionError("no signal")
            sent.append(item)

        return upload

    with pytest.raises(ConnectionError):
        store.drain(signal_lost_after(2))
    restarted = PhoneStore(path)
    assert [u.id for u in restarted.uploads()] == queued[2:]
    assert restarted.drain(signal_lost_after(100)) == 4
    assert [u.frame for u in sent] == [bytes([n]) for n in range(6)]
    assert [u.kind for u in sent] == [UploadKind.AUDIT, UploadKind.RECEIPT] * 3
    assert {u.door_id for u in sent} == {"ab" * 16}
    assert restarted.uploads() == [] and restarted.drain(signal_lost_after(100)) == 0


def test_an_unknown_upload_kind_is_refused(tmp_path: Path) -> None:
    store = PhoneStore(tmp_path / "phone.db")
    with pytest.raises(ValueError):
        store.enqueue("selfie", "ab" * 16, b"x", now=NOW)  # type: ignore[arg-type]
    assert store.uploads() == []
