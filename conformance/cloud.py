"""The suite's cloud: the keys and signers the conformance suite holds itself.

Theory of operation: the suite plays the cloud of ``docs/protocol.md``. Every key it
uses is derived from a label with SHA-256 (:func:`derive`), so two runs send the same
bytes and a failing check can be replayed; none of these keys may ever protect a real
door. :class:`SuiteCloud` keeps one door's credential history
(:class:`protocol.CredentialHistory`), its cloud signing key per epoch, and builds the
cloud-signed forms (bundles, TIME_SYNC, AUDIT_ACK, KEY_ROTATION, mobile credentials);
it also checks what the lock signs (RECEIPT, AUDIT_BATCH) with the lock's registered
identity key. It is sans-IO: the checks move the bytes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocol import (
    NO_CHALLENGE,
    AuditAck,
    AuditBatch,
    Credential,
    CredentialHistory,
    CredentialKind,
    CredentialList,
    Intent,
    KeyRotation,
    MobileCredential,
    Receipt,
    ScopeKind,
    TimeSync,
    seal_bundle,
)
from protocol.bundle import Change
from protocol.crypto import (
    ed25519_private_from_seed,
    ed25519_public_from_bytes,
    public_bytes,
    x25519_private_from_seed,
    x25519_public_from_bytes,
)
from protocol.keycard import Keycard
from protocol.messages import Auth

from .lut import ProvisionRequest, Registration

__all__ = ["SuiteCloud", "derive"]


def derive(label: str, size: int = 32) -> bytes:
    """``size`` bytes derived from ``label``: the suite's only source of keys and ids."""
    out, counter = b"", 0
    while len(out) < size:
        out += hashlib.sha256(f"lk1 conformance {label} {counter}".encode()).digest()
        counter += 1
    return out[:size]


class SuiteCloud:
    """The cloud for one door under test: history, keys per epoch, signers, verifiers."""

    def __init__(self, *, lock_time: int, capacity: int, label: str = "door") -> None:
        self.door_id = derive(f"{label} id", 16)
        self.property_id = derive(f"{label} property", 16)
        self.doorcode_secret = derive(f"{label} doorcode")
        self.lock_time, self.capacity = lock_time, capacity
        self.history = CredentialHistory(self.door_id)
        self.epoch = 0
        self.time_sync_seq = 0
        self._ephemerals = itertools.count()
        self.registration: Registration | None = None

    # --- keys ----------------------------------------------------------------------------

    @staticmethod
    def key_at(epoch: int) -> Ed25519PrivateKey:
        """The cloud signing key of ``epoch``."""
        return ed25519_private_from_seed(derive(f"cloud signing epoch {epoch}"))

    @property
    def key(self) -> Ed25519PrivateKey:
        return self.key_at(self.epoch)

    def provision_request(self) -> ProvisionRequest:
        return ProvisionRequest(
            cloud_public_key=public_bytes(self.key_at(0)),
            door_id=self.door_id,
            property_id=self.property_id,
            doorcode_secret=self.doorcode_secret,
            lock_time=self.lock_time,
            capacity=self.capacity,
        )

    @property
    def reg(self) -> Registration:
        if self.registration is None:
            raise RuntimeError("the door is not provisioned yet")
        return self.registration

    def _ephemeral(self) -> X25519PrivateKey:
        return x25519_private_from_seed(derive(f"ephemeral {next(self._ephemerals)}"))

    # --- credentials and bundles ---------------------------------------------------------

    @property
    def current(self) -> CredentialList:
        return self.history.current

    def commit(
        self, *upserts: Credential, removals: Iterable[tuple[int, bytes]] = ()
    ) -> CredentialList:
        return self.history.commit(upserts=upserts, removals=removals)

    def bundle(
        self, base: int = 0, *, key: Ed25519PrivateKey | None = None, epoch: int | None = None
    ) -> bytes:
        """A BUNDLE frame from ``base`` to the current version, sealed to the lock."""
        sealed = self.history.bundle(
            base,
            door_public=x25519_public_from_bytes(self.reg.sealing_public),
            cloud_key=key or self.key,
            key_epoch=self.epoch if epoch is None else epoch,
            ephemeral=self._ephemeral(),
        )
        return sealed.to_frame()

    def crafted_bundle(
        self,
        changes: Sequence[Change],
        *,
        base: int,
        target: int,
        digest: bytes,
        door_id: bytes | None = None,
        sealed_to: bytes | None = None,
    ) -> bytes:
        """A cloud-signed bundle with chosen header fields (for refusal checks)."""
        return seal_bundle(
            changes,
            door_id=door_id or self.door_id,
            door_public=x25519_public_from_bytes(sealed_to or self.reg.sealing_public),
            base_version=base,
            target_version=target,
            target_digest=digest,
            key_epoch=self.epoch,
            cloud_key=self.key,
            ephemeral=self._ephemeral(),
        ).to_frame()

    # --- control messages ----------------------------------------------------------------

    def time_sync(
        self,
        cloud_time: int,
        *,
        challenge: bytes = NO_CHALLENGE,
        sequence: int | None = None,
        door_id: bytes | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> bytes:
        if sequence is None:
            self.time_sync_seq += 1
            sequence = self.time_sync_seq
        sync = TimeSync(
            door_id=door_id or self.door_id,
            key_epoch=self.epoch,
            sequence=sequence,
            cloud_time=cloud_time,
            challenge=challenge,
        )
        return sync.signed(key or self.key).to_frame()

    def audit_ack(
        self, up_to_seq: int, *, door_id: bytes | None = None, key: Ed25519PrivateKey | None = None
    ) -> bytes:
        ack = AuditAck(door_id=door_id or self.door_id, key_epoch=self.epoch, up_to_seq=up_to_seq)
        return ack.signed(key or self.key).to_frame()

    def rotation(
        self, new_epoch: int, *, signer: Ed25519PrivateKey | None = None, prover: int | None = None
    ) -> bytes:
        """KEY_ROTATION to ``new_epoch``; ``prover`` signs possession with another epoch's key."""
        new_key = self.key_at(new_epoch)
        rotation = KeyRotation.create(
            current_key=signer or self.key_at(new_epoch - 1), new_key=new_key, new_epoch=new_epoch
        )
        if prover is not None:
            other = KeyRotation.create(
                current_key=self.key_at(new_epoch - 1),
                new_key=self.key_at(prover),
                new_epoch=new_epoch,
            )
            rotation = KeyRotation(
                new_epoch=new_epoch,
                new_public_key=public_bytes(new_key),
                possession_signature=other.possession_signature,
            ).signed(signer or self.key_at(new_epoch - 1))
        return rotation.to_frame()

    # --- people, phones, cards -----------------------------------------------------------

    @staticmethod
    def person_id(n: int) -> bytes:
        return derive(f"person {n}", 16)

    @staticmethod
    def phone_key(n: int) -> Ed25519PrivateKey:
        return ed25519_private_from_seed(derive(f"phone {n}"))

    @staticmethod
    def card(n: int) -> Keycard:
        return Keycard(uid=derive(f"card uid {n}", 7), key=derive(f"card key {n}", 16))

    @staticmethod
    def card_entry(card: Keycard, **fields: object) -> Credential:
        return Credential(
            kind=CredentialKind.KEYCARD,
            credential_id=card.uid,
            card_key=card.key,
            **fields,  # type: ignore[arg-type]
        )

    def person_entry(self, n: int, **fields: object) -> Credential:
        return Credential(kind=CredentialKind.PERSON, credential_id=self.person_id(n), **fields)  # type: ignore[arg-type]

    def mobile_credential(
        self,
        person: int,
        *,
        valid_from: int,
        valid_until: int,
        scope_ids: Sequence[bytes] | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> MobileCredential:
        return MobileCredential(
            key_epoch=self.epoch,
            credential_id=derive(f"mobile credential {person}", 16),
            person_id=self.person_id(person),
            phone_public_key=public_bytes(self.phone_key(person)),
            valid_from=valid_from,
            valid_until=valid_until,
            scope_kind=ScopeKind.DOORS,
            scope_ids=tuple(scope_ids or (self.door_id,)),
        ).signed(key or self.key)

    def auth(
        self,
        credential: MobileCredential,
        person: int,
        *,
        challenge: bytes,
        intent: Intent = Intent.UNLOCK,
    ) -> bytes:
        return Auth.create(
            credential=credential,
            phone_key=self.phone_key(person),
            door_id=self.door_id,
            challenge=challenge,
            intent=intent,
        ).to_frame()

    # --- what the lock signs -------------------------------------------------------------

    def verify_receipt(self, payload: bytes) -> Receipt:
        """Verify a RECEIPT payload with the lock's identity key (AuthenticationError)."""
        return Receipt.verified_from_bytes(
            payload, ed25519_public_from_bytes(self.reg.identity_public)
        )

    def verify_audit(self, payload: bytes) -> AuditBatch:
        """Verify an AUDIT_BATCH payload with the lock's identity key, then parse it."""
        return AuditBatch.verified_from_bytes(
            payload, ed25519_public_from_bytes(self.reg.identity_public)
        )
