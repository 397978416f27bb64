"""A seeded cloud on a real database, with real lock controllers for its doors.

Used by the cloud tests: ``CloudWorld`` seeds the demo world with door keys taken
from provisioned :class:`controller.core.Controller` instances, so bundles the
cloud makes are applied by real locks and their receipts go back to the cloud.
The database is any engine: :func:`world_at` takes a URL (a SQLite file or a
PostgreSQL database from :mod:`tests.db_fixtures`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cloud.db import create_schema, make_engine, session_factory
from cloud.seed import SeedResult, seed_demo
from cloud.service import CloudService
from cloud.sync import BundleCache
from controller.config import ControllerConfig
from controller.core import Controller
from controller.events import MQTT, FrameReceived, Send
from controller.identity import LockIdentity
from protocol import Receipt, decode_message
from protocol.crypto import public_bytes
from simulators.fixture import counting_random, fixed_bytes

T0 = 1_800_000_000
CLOUD_SEED = fixed_bytes("cloud world signing key")


@dataclass
class CloudWorld:
    """A seeded database plus one controller per door."""

    engine: Engine
    seed: SeedResult = field(init=False)
    locks: dict[str, Controller] = field(default_factory=dict)
    cache: BundleCache = field(default_factory=BundleCache)
    now: int = T0
    random: Callable[[int], bytes] = field(default_factory=lambda: counting_random("cloud world"))

    def __post_init__(self) -> None:
        create_schema(self.engine)
        self.sessions = session_factory(self.engine)
        identities: dict[str, LockIdentity] = {}

        def door_keys(door_id: str) -> tuple[bytes, bytes, bytes]:
            identity = LockIdentity.generate(
                door_id=bytes.fromhex(door_id),
                property_id=bytes(16),
                doorcode_secret=fixed_bytes(f"code {door_id}"),
                random=counting_random(f"lock {door_id}"),
            )
            identities[door_id] = identity
            return identity.identity_public, identity.sealing_public, identity.doorcode_secret

        with self.sessions.begin() as session:
            self.seed = seed_demo(session, self.random, door_keys=door_keys, cloud_seed=CLOUD_SEED)
        from cloud.keys import current_key

        with self.sessions.begin() as session:
            cloud_public = current_key(session).public
        for door_id, identity in identities.items():
            self.locks[door_id], _ = Controller.provision(
                identity,
                cloud_public,
                ControllerConfig(),
                random=counting_random(f"rt {door_id}"),
                now=float(self.now),
                wall_time=self.now,
            )

    @contextmanager
    def service(self) -> Iterator[CloudService]:
        """One transaction of the cloud."""
        with self.sessions.begin() as session:
            yield CloudService(session, self.now, self.random, self.cache)

    def deliver(self, door_id: str, frame: bytes) -> Receipt:
        """Give a bundle frame to the lock; return its (decoded) receipt."""
        actions = self.locks[door_id].handle(FrameReceived(MQTT, frame), float(self.now))
        messages = [decode_message(a.frame) for a in actions if isinstance(a, Send)]
        receipts = [m for m in messages if isinstance(m, Receipt)]
        assert receipts, messages
        return receipts[0]

    def pending_frame(self, door_id: str) -> bytes:
        """The bundle taking the door from its synced version to its current one."""
        with self.service() as cloud:
            door = cloud.door(door_id)
            from cloud.sync import bundle_frame

            return bundle_frame(
                cloud.session,
                door,
                door.synced_version,
                key=cloud.key,
                random=cloud.random,
                cache=cloud.cache,
            )

    def sync_door(self, door_id: str) -> int:
        """Carry the door's pending bundle to its lock and the receipt back."""
        receipt = self.deliver(door_id, self.pending_frame(door_id))
        with self.service() as cloud:
            return cloud.receipt(door_id, receipt.to_bytes())


def world_at(url: str) -> CloudWorld:
    """A seeded world on the (empty) database at ``url``."""
    return CloudWorld(make_engine(url))


def sqlite_world(tmp_path_factory_path: str) -> CloudWorld:
    return world_at(f"sqlite:///{tmp_path_factory_path}")


__all__ = ["CloudWorld", "Session", "counting_random", "public_bytes", "sqlite_world", "world_at"]
