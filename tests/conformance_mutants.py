"""Mutant locks: the reference controller with exactly one requirement broken.

Theory of operation: each mutant is a small subclass of
:class:`controller.core.Controller` (or an adapter option) that removes or bends one
rule of ``docs/protocol.md``, as a firmware bug would. The conformance suite must fail
each mutant on the requirement named in :data:`MUTANTS` (and, where a bug breaks more
than one rule by nature, on the listed companions) and pass it on everything else;
that is what shows the suite can see the bug. They live in ``tests/`` so that nothing
shipped can build a broken lock.

Bundle mutants swap :func:`protocol.apply_bundle` (as the core looks it up) for
:func:`mutant_apply`, a copy of the reference order of checks with one step bent, for
the duration of one ``_on_bundle`` call.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import controller.core as core
from conformance.inprocess import InProcessLock
from controller.core import Controller
from controller.events import Channel
from controller.state import AuditReleased, KeyRotated, ListChanged
from protocol import (
    AuditAck,
    AuditEventKind,
    AuthenticationError,
    CredentialKind,
    CredentialList,
    Hello,
    KeyRotation,
    ProtocolError,
    Reason,
    apply_bundle,
)
from protocol.bundle import decode_changes, open_changes, verify_bundle
from protocol.delta import ApplyOutcome, apply_changes
from protocol.doorcode import check_doorcode
from protocol.errors import (
    BaseVersionError,
    DigestMismatchError,
    RollbackError,
    WrongDoorError,
)
from protocol.receipt import make_receipt

__all__ = ["MUTANTS", "Mutant"]


# --- a bendable copy of the reference apply (§6.2.2) ----------------------------------------


def mutant_apply(bend: str) -> Callable[..., ApplyOutcome]:
    """``protocol.apply_bundle`` with one step bent: ``rollback``, ``door``, ``digest``
    or ``reapply``."""

    def apply(current: CredentialList, payload: bytes, **kw: Any) -> ApplyOutcome:
        bundle = verify_bundle(payload, cloud_public=kw["cloud_public"], limits=kw["limits"])
        if bundle.door_id != current.door_id and bend != "door":
            raise WrongDoorError("bundle is addressed to another door")
        if bundle.target_version <= current.version:
            if bundle.target_version < current.version and bend != "rollback":
                raise RollbackError(current.version, bundle.target_version)
            if bundle.target_version == current.version and bend != "reapply":
                if bundle.target_digest != current.digest:
                    raise DigestMismatchError("another digest at the current version")
                return ApplyOutcome(held=current, changed=False, bundle=bundle)
        elif current.version < bundle.base_version:
            raise BaseVersionError(current.version, bundle.base_version, bundle.target_version)
        plaintext = open_changes(bundle, door_private=kw["door_private"])
        changes = decode_changes(plaintext, limits=kw["limits"])
        result = apply_changes(
            current, changes, version=bundle.target_version, capacity=kw["capacity"]
        )
        rolled_back = bundle.target_version < current.version  # only the rollback bend
        if result.digest != bundle.target_digest and bend != "digest" and not rolled_back:
            raise DigestMismatchError("the resulting list does not match the signed digest")
        return ApplyOutcome(
            held=result, changed=True, bundle=bundle, changes=changes, encoded_changes=plaintext
        )

    return apply


@contextmanager
def _core_apply(apply: Callable[..., ApplyOutcome]) -> Iterator[None]:
    """Within the block, the controller core applies bundles with ``apply``."""
    saved = getattr(core, "apply_bundle")  # noqa: B009 - not in core's __all__
    setattr(core, "apply_bundle", apply)  # noqa: B010
    try:
        yield
    finally:
        setattr(core, "apply_bundle", saved)  # noqa: B010


def _bundle_mutant(bend: str) -> type[Controller]:
    class BundleMutant(Controller):
        def _on_bundle(self, channel: Channel, payload: bytes, now: float) -> None:
            with _core_apply(mutant_apply(bend)):
                super()._on_bundle(channel, payload, now)

    BundleMutant.__name__ = f"BundleMutant[{bend}]"
    return BundleMutant


# --- access mutants -------------------------------------------------------------------------


class BareUidMutant(Controller):
    """Opens for a known card UID whatever the card answers (no challenge-response)."""

    def _card_reason(self, uid: bytes, response: bytes, lockout_key: bytes, now: float) -> Reason:
        self._cards.pop(uid, None)
        entry = self.state.held.view(CredentialKind.KEYCARD, uid)
        if entry is None:
            return Reason.UNKNOWN_CREDENTIAL
        return entry.decide(self.lock_time(now), utc_offset_minutes=self.config.utc_offset_minutes)


class InclusiveUntilMutant(Controller):
    """Treats a card entry's valid_until as inclusive (off by one at the expiry edge)."""

    def _card_reason(self, uid: bytes, response: bytes, lockout_key: bytes, now: float) -> Reason:
        reason = super()._card_reason(uid, response, lockout_key, now)
        entry = self.state.held.lookup(CredentialKind.KEYCARD, uid)
        if reason is Reason.EXPIRED and entry and self.lock_time(now) == entry.valid_until:
            return Reason.GRANTED
        return reason


class ShortLockoutMutant(Controller):
    """Ends a failure lock-out one second before the duration it declares."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lockout.duration -= 1


class WideDoorcodeMutant(Controller):
    """Accepts a QUARTER_HOUR code one window too long (w, w+1 and w+2)."""

    def _on_key(self, key: str, now: float) -> None:
        code = self._keypad._digits + key
        if len(code) == 8 and code[0] == "2":
            earlier = check_doorcode(
                code,
                secret=self.state.identity.doorcode_secret,
                door_id=self.door_id,
                now=self.lock_time(now) - 900,
            )
            if earlier is not None:
                self._keypad._digits = ""
                self._decide(now, "keypad", code[:3].encode(), Reason.GRANTED, b"keypad")
                self._open()
                return
        super()._on_key(key, now)


# --- control-message mutants ----------------------------------------------------------------


class FreshLookingMutant(Controller):
    """Always reports a fresh list (list_age_s 0): a frozen lock looks up to date."""

    def hello(self, challenge: bytes, now: float) -> Hello:
        return replace(super().hello(challenge, now), list_age_s=0)


class UnloggedRefusalMutant(Controller):
    """Logs granted phone decisions only (refusals leave no audit trail)."""

    def _append_event(
        self, time: int, kind: AuditEventKind, reason: int, credential_id: bytes, detail: int
    ) -> int:
        if kind is AuditEventKind.PHONE_DECISION and reason != Reason.GRANTED:
            return 0
        return super()._append_event(time, kind, reason, credential_id, detail)


class SilentClockMutant(Controller):
    """Moves its clock on TIME_SYNC without logging TIME_CORRECTED."""

    def _log(self, now: float, kind: AuditEventKind, **fields: Any) -> int:
        if kind is AuditEventKind.TIME_CORRECTED:
            return 0
        return super()._log(now, kind, **fields)


class LeakyAuthMutant(Controller):
    """Says in its AUTH_FAILED details which message failed to verify."""

    def _send_error(self, channel: Channel, error: ProtocolError, about: int) -> None:
        if isinstance(error, AuthenticationError):
            error = AuthenticationError(f"signature check failed on message type {about}")
        super()._send_error(channel, error, about)


class UnboundedClockMutant(Controller):
    """Lets any signed, fresh TIME_SYNC set the clock, however far (no step bound)."""

    def _on_time_sync(self, channel: Channel, payload: bytes, now: float) -> None:
        config = self.config
        self.config = replace(config, max_clock_step_s=2**31, max_bound_clock_step_s=2**31)
        try:
            super()._on_time_sync(channel, payload, now)
        finally:
            self.config = config


class TimeSyncReplayMutant(Controller):
    """Forgets to compare a TIME_SYNC's sequence with the last one accepted."""

    def _on_time_sync(self, channel: Channel, payload: bytes, now: float) -> None:
        self.state.time_sync_seq = 0
        super()._on_time_sync(channel, payload, now)


class UnverifiedRotationMutant(Controller):
    """Takes a KEY_ROTATION to the next epoch without checking either signature."""

    def _on_key_rotation(self, channel: Channel, payload: bytes, now: float) -> None:
        rotation = KeyRotation.from_bytes(payload)
        if rotation.new_epoch != self.state.cloud.epoch + 1:
            super()._on_key_rotation(channel, payload, now)
            return
        self._record(KeyRotated(rotation.new_epoch, rotation.new_public_key))
        self._log(now, AuditEventKind.KEY_ROTATED, detail=rotation.new_epoch)


class UnverifiedAckMutant(Controller):
    """Frees audit events on any AUDIT_ACK, without signature or door checks."""

    def _on_audit_ack(self, channel: Channel, payload: bytes, now: float) -> None:
        ack = AuditAck.from_bytes(payload)
        if ack.up_to_seq < self.state.audit.next_seq:
            self._record(AuditReleased(ack.up_to_seq))
            self._send_audit(channel)


class CrcBlindMutant(Controller):
    """Repairs the CRC of every frame before checking it (acts on corrupted frames)."""

    def _on_frame(self, channel: Channel, data: bytes, now: float) -> None:
        if len(data) >= 12:
            data = data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "big")
        super()._on_frame(channel, data, now)


class TornApplyMutant(Controller):
    """Commits a bundle one change per journal transaction (a power cut can split it)."""

    def _on_bundle(self, channel: Channel, payload: bytes, now: float) -> None:
        try:
            outcome = apply_bundle(
                self.state.held,
                payload,
                cloud_public=self.state.cloud.key(),
                door_private=self._sealing_key,
                capacity=self.config.capacity,
                limits=self.config.limits,
            )
        except Exception:
            super()._on_bundle(channel, payload, now)
            return
        if not outcome.changed or len(outcome.changes) < 2:
            super()._on_bundle(channel, payload, now)
            return
        version = outcome.bundle.target_version
        for change in outcome.changes:
            partial = apply_changes(
                self.state.held, [change], version=version, capacity=self.config.capacity
            )
            self._record(ListChanged(version, partial.digest, self.lock_time(now), (change,)))
            self._flush()
        self._log(now, AuditEventKind.BUNDLE_APPLIED, detail=version)
        receipt = make_receipt(self._identity_key, self.state.held, requested_version=version)
        self._send(channel, receipt.to_frame())


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """A broken lock and the requirements the suite must fail it on."""

    name: str
    build: Callable[[], InProcessLock]
    breaks: frozenset[str]
    why_more: str = ""
    """Why a mutant legitimately breaks more than one requirement."""


def _lock(cls: type[Controller]) -> Callable[[], InProcessLock]:
    return lambda: InProcessLock(controller_class=cls)


MUTANTS = (
    Mutant(
        "accepts_rollback",
        _lock(_bundle_mutant("rollback")),
        frozenset({"bundle_rollback_is_refused"}),
    ),
    Mutant(
        "skips_door_check",
        _lock(_bundle_mutant("door")),
        frozenset({"bundle_for_another_door_is_refused"}),
    ),
    Mutant(
        "commits_before_digest_check",
        _lock(_bundle_mutant("digest")),
        frozenset({"bundle_digest_is_checked_before_commit"}),
    ),
    Mutant(
        "reapplies_duplicates",
        _lock(_bundle_mutant("reapply")),
        frozenset({"bundle_reapply_is_idempotent"}),
    ),
    Mutant(
        "accepts_bare_uid",
        _lock(BareUidMutant),
        frozenset(
            {
                "card_clone_without_key_is_refused",
                "card_response_replay_is_refused",
                "card_lockout_at_its_edges",
            }
        ),
        "without challenge-response a recorded answer is as good as any answer, and no"
        " wrong answer ever counts towards a lock-out",
    ),
    Mutant(
        "short_lockout",
        _lock(ShortLockoutMutant),
        frozenset({"card_lockout_at_its_edges"}),
    ),
    Mutant(
        "inclusive_valid_until",
        _lock(InclusiveUntilMutant),
        frozenset({"card_decision_at_validity_edges"}),
    ),
    Mutant(
        "wide_doorcode_window",
        _lock(WideDoorcodeMutant),
        frozenset({"doorcode_quarter_hour_window"}),
    ),
    Mutant(
        "unlogged_phone_refusals",
        _lock(UnloggedRefusalMutant),
        frozenset({"phone_decisions_are_logged"}),
    ),
    Mutant(
        "unlogged_time_correction",
        _lock(SilentClockMutant),
        frozenset({"control_changes_are_logged"}),
    ),
    Mutant("leaky_auth_failures", _lock(LeakyAuthMutant), frozenset({"auth_failures_are_opaque"})),
    Mutant(
        "hides_list_age",
        _lock(FreshLookingMutant),
        frozenset({"hello_reports_the_list_age"}),
    ),
    Mutant(
        "unbounded_clock_step",
        _lock(UnboundedClockMutant),
        frozenset({"time_sync_step_is_bounded"}),
    ),
    Mutant(
        "replays_time_sync",
        _lock(TimeSyncReplayMutant),
        frozenset({"time_sync_replayed_sequence_is_stale", "power_cycle_keeps_committed_state"}),
        "the power-cycle check replays a TIME_SYNC to prove its sequence survived",
    ),
    Mutant(
        "unverified_rotation",
        _lock(UnverifiedRotationMutant),
        frozenset({"key_rotation_order_and_proofs"}),
    ),
    Mutant(
        "unverified_audit_ack",
        _lock(UnverifiedAckMutant),
        frozenset({"audit_ack_forged_releases_nothing"}),
    ),
    Mutant("crc_blind", _lock(CrcBlindMutant), frozenset({"frame_bad_checksum_is_malformed"})),
    Mutant(
        "torn_apply",
        _lock(TornApplyMutant),
        frozenset({"power_cut_during_update_keeps_old_or_new"}),
    ),
    Mutant(
        "no_segment_resume",
        lambda: InProcessLock(reassembler_per_connection=True),
        frozenset({"segmentation_resumes_after_a_dropped_link"}),
    ),
)
