"""Power cut at every flash write of a bundle apply and of audit appends.

After each cut the lock reboots from what reached flash and must hold exactly the
old state or the new one: a list that is entirely version n or entirely n+1
(digest equal to one of them), an audit log that is a gapless prefix, counters
that never go back.
"""

from __future__ import annotations

import itertools

import pytest

from controller.config import ControllerConfig
from controller.events import MQTT, CardAnswered, CardTapped, FrameReceived
from controller.identity import LockIdentity
from controller.runtime import LockRuntime
from controller.storage import MemoryFlash, MemoryMedium, PowerCut, PowerLost
from protocol import Credential, CredentialHistory, CredentialKind
from protocol.crypto import public_bytes
from simulators.fixture import World, counting_random, fixed_bytes

WORLD = World()
T0 = 1_800_000_000


def provisioned(config: ControllerConfig) -> tuple[MemoryMedium, LockIdentity]:
    identity = LockIdentity.generate(
        door_id=fixed_bytes("pc door", 16),
        property_id=bytes(16),
        doorcode_secret=bytes(32),
        random=counting_random("power-cut random"),
    )
    flash = MemoryFlash()
    LockRuntime.provision(
        flash,
        identity,
        public_bytes(WORLD.cloud_key),
        config=config,
        clock=lambda: float(T0),
        wall_time=T0,
        random=counting_random("power-cut random"),
    )
    return flash.medium, identity


def bundle_frames(identity: LockIdentity, count: int) -> list[bytes]:
    history = CredentialHistory(identity.door_id)
    frames = []
    for n in range(count):
        history.commit(
            upserts=[
                Credential(
                    kind=CredentialKind.KEYCARD,
                    credential_id=bytes([4, n, 1, 2]),
                    card_key=fixed_bytes(f"key {n}", 16),
                )
            ]
        )
        bundle = history.bundle(
            n,
            door_public=identity.sealing_key().public_key(),
            cloud_key=WORLD.cloud_key,
            key_epoch=0,
            ephemeral=WORLD.ephemeral(f"pc {n}"),
        )
        frames.append(bundle.to_frame())
    return frames


def reboot(
    medium: MemoryMedium, config: ControllerConfig, fault: PowerCut | None = None
) -> LockRuntime:
    return LockRuntime.boot(
        MemoryFlash(medium=medium, fault=fault),
        config=config,
        clock=lambda: float(T0 + 60),
        random=counting_random("power-cut random"),
    )


@pytest.mark.parametrize("snapshot_every", [1, 2, 256])
@pytest.mark.parametrize("torn", [None, 0, -1])
def test_power_cut_at_every_write_of_a_bundle_apply(snapshot_every: int, torn: int | None) -> None:
    config = ControllerConfig(snapshot_every=snapshot_every)
    base, identity = provisioned(config)
    frames = bundle_frames(identity, 2)
    before = reboot(_copy(base), config)
    before.handle(FrameReceived(MQTT, frames[0]))
    old_digest, old_boots = before.controller.state.held.digest, before.controller.state.boot_count
    medium_after_first = before.flash.medium
    outcomes = set()
    for k in itertools.count(1):
        medium = _copy(medium_after_first)
        try:
            runtime = reboot(medium, config, PowerCut(at_write=k, torn_bytes=torn))
            new = runtime.handle(FrameReceived(MQTT, frames[1]))
        except PowerLost:
            after = reboot(medium, config)
            state = after.controller.state
            assert state.held.version in (1, 2), k
            assert state.held.digest in (old_digest, _expected_digest(identity, 2)), k
            assert state.boot_count > old_boots
            outcomes.add(state.held.version)
            continue
        assert new and runtime.controller.state.held.version == 2
        break
    assert k > 1 and outcomes <= {1, 2}
    if snapshot_every == 1:  # the cut can land after the journal append: both outcomes occur
        assert outcomes == {1, 2}


def test_power_cut_at_every_write_of_audit_appends() -> None:
    config = ControllerConfig(snapshot_every=3)
    base, _ = provisioned(config)
    seen_heads = set()
    for k in itertools.count(1):
        medium = _copy(base)
        try:
            runtime = reboot(medium, config, PowerCut(at_write=k))
            for n in range(6):
                runtime.handle(CardTapped(bytes([4, n, 9, 9])))
                runtime.handle(CardAnswered(bytes([4, n, 9, 9]), bytes(16)))
        except PowerLost:
            state = reboot(medium, config).controller.state
            events = state.audit.events()
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), k
            seen_heads.add(state.audit.head_seq)
            continue
        break
    assert len(seen_heads) > 3


def _copy(medium: MemoryMedium) -> MemoryMedium:
    copy = MemoryMedium()
    copy.slots = [bytearray(s) if s is not None else None for s in medium.slots]
    return copy


def _expected_digest(identity: LockIdentity, version: int) -> bytes:
    history = CredentialHistory(identity.door_id)
    for n in range(version):
        history.commit(
            upserts=[
                Credential(
                    kind=CredentialKind.KEYCARD,
                    credential_id=bytes([4, n, 1, 2]),
                    card_key=fixed_bytes(f"key {n}", 16),
                )
            ]
        )
    return history.current.digest
