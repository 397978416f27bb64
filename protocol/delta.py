"""Computing and applying delta bundles (``docs/protocol.md`` §6.2.2).

Theory of operation: the cloud keeps, per door, the version at which each
credential last changed (:class:`CredentialHistory`, a sans-IO model of that
bookkeeping). The delta from base *b* is the final state of every credential that
changed after *b*: an upsert if it is still in the list, else a removal. Such a
delta turns a list at any version *v* with ``b <= v < t`` into the list at *t*.

:func:`apply_bundle` is the lock's one ordered check (as python-tuf's trusted
metadata set): signature over the exact bytes → door binding → version order
(older: :class:`RollbackError`; equal with the same digest: the idempotent no-op)
→ base range → decryption → capacity → digest of the resulting list against the
signed target digest. Nothing is returned, so nothing can be committed, unless
every check passes: a lock holds the old list or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .bundle import (
    Change,
    Remove,
    SealedBundle,
    Upsert,
    decode_changes,
    open_changes,
    seal_bundle,
    verify_bundle,
)
from .codes import CredentialKind
from .credential_list import Credential, CredentialKey, CredentialList, key_bytes
from .errors import (
    BaseVersionError,
    CapacityError,
    DigestMismatchError,
    RollbackError,
    UsageError,
    WrongDoorError,
)
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["ApplyOutcome", "CredentialHistory", "apply_bundle", "apply_changes", "compute_delta"]


def compute_delta(
    target: CredentialList, changed_at: Mapping[CredentialKey, int], base_version: int
) -> tuple[Change, ...]:
    """The changes that take any list in ``[base_version, target.version)`` to ``target``.

    ``changed_at`` maps every credential key ever present to the version at which
    it last changed (removed keys included).
    """
    if not 0 <= base_version < target.version:
        raise UsageError(f"base version {base_version} must be below target {target.version}")
    changes: list[Change] = []
    for key, version in changed_at.items():
        if version > base_version:
            entry = target.get(key)
            changes.append(Upsert(entry) if entry else Remove(CredentialKind(key[0]), key[1]))
    return tuple(sorted(changes, key=lambda c: c.key))


def apply_changes(
    current: CredentialList, changes: Iterable[Change], *, version: int, capacity: int
) -> CredentialList:
    """Apply decoded changes to a list (no checks but capacity)."""
    upserts: list[bytes] = []
    removals: list[bytes] = []
    for change in changes:
        if isinstance(change, Upsert):
            upserts.append(change.credential.encoded)
        else:
            removals.append(key_bytes(change.key))
    result = current.with_encoded_changes(version=version, upserts=upserts, removals=removals)
    if len(result) > capacity:
        raise CapacityError(len(result), capacity)
    return result


@dataclass(frozen=True, kw_only=True)
class ApplyOutcome:
    """Result of :func:`apply_bundle`: the list to hold now and whether it changed."""

    held: CredentialList
    changed: bool
    bundle: SealedBundle
    changes: tuple[Change, ...] = ()
    """The decrypted changes (empty for the idempotent no-op)."""
    encoded_changes: bytes = b""
    """Their canonical encoding, as decrypted (a journal stores it without re-encoding)."""


def apply_bundle(
    current: CredentialList,
    payload: bytes,
    *,
    cloud_public: Ed25519PublicKey,
    door_private: X25519PrivateKey,
    capacity: int,
    limits: Limits = DEFAULT_LIMITS,
) -> ApplyOutcome:
    """Lock side: verify a BUNDLE payload and compute the list it leads to.

    Raises :class:`AuthenticationError`, :class:`WrongDoorError`,
    :class:`RollbackError`, :class:`BaseVersionError`, :class:`CapacityError`,
    :class:`DigestMismatchError` or a :class:`DecodeError`; ``current`` is never
    modified. Re-applying a bundle already applied returns ``changed=False``.
    """
    bundle = verify_bundle(payload, cloud_public=cloud_public, limits=limits)
    if bundle.door_id != current.door_id:
        raise WrongDoorError("bundle is addressed to another door")
    if bundle.target_version <= current.version:
        return _same_or_rollback(current, bundle)
    if current.version < bundle.base_version:
        raise BaseVersionError(current.version, bundle.base_version, bundle.target_version)
    plaintext = open_changes(bundle, door_private=door_private)
    changes = decode_changes(plaintext, limits=limits)
    result = apply_changes(current, changes, version=bundle.target_version, capacity=capacity)
    if result.digest != bundle.target_digest:
        raise DigestMismatchError("the resulting list does not match the signed target digest")
    return ApplyOutcome(
        held=result, changed=True, bundle=bundle, changes=changes, encoded_changes=plaintext
    )


def _same_or_rollback(current: CredentialList, bundle: SealedBundle) -> ApplyOutcome:
    if bundle.target_version < current.version:
        raise RollbackError(current.version, bundle.target_version)
    if bundle.target_digest != current.digest:
        raise DigestMismatchError("bundle targets the current version with another digest")
    return ApplyOutcome(held=current, changed=False, bundle=bundle)


class CredentialHistory:
    """Cloud side, sans-IO: one door's list and the version each credential last changed.

    This is the reference model of the sync engine's bookkeeping: every
    :meth:`commit` makes one new version; :meth:`delta` and :meth:`bundle` serve
    any base the door may hold.
    """

    def __init__(self, door_id: bytes) -> None:
        self._list = CredentialList.empty(door_id)
        self._changed_at: dict[CredentialKey, int] = {}

    @property
    def current(self) -> CredentialList:
        """The list at the newest version."""
        return self._list

    def commit(
        self, *, upserts: Iterable[Credential] = (), removals: Iterable[CredentialKey] = ()
    ) -> CredentialList:
        """Record one change set as the next version and return the new list."""
        upserts, removals = list(upserts), list(removals)
        if not upserts and not removals:
            raise UsageError("a commit must change at least one credential")
        version = self._list.version + 1
        self._list = self._list.with_changes(version=version, upserts=upserts, removals=removals)
        for key in [c.key for c in upserts] + removals:
            self._changed_at[key] = version
        return self._list

    def delta(self, base_version: int) -> tuple[Change, ...]:
        """The changes from ``base_version`` to the current version."""
        return compute_delta(self._list, self._changed_at, base_version)

    def bundle(
        self,
        base_version: int,
        *,
        door_public: X25519PublicKey,
        cloud_key: Ed25519PrivateKey,
        key_epoch: int,
        ephemeral: X25519PrivateKey,
    ) -> SealedBundle:
        """A sealed, signed bundle from ``base_version`` to the current version."""
        return seal_bundle(
            self.delta(base_version),
            door_id=self._list.door_id,
            door_public=door_public,
            base_version=base_version,
            target_version=self._list.version,
            target_digest=self._list.digest,
            key_epoch=key_epoch,
            cloud_key=cloud_key,
            ephemeral=ephemeral,
        )
