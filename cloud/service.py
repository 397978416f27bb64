"""The cloud's operations and rules, independent of HTTP.

Theory of operation: a :class:`CloudService` wraps one database session (one
transaction) with the clock and randomness injected. Every operation checks its
rules first and raises a :class:`~cloud.errors.CloudError` *before* changing
anything, then changes the source of truth (keycards, grants), lets the sync
engine (:mod:`cloud.sync`) bump the affected doors, and writes any email to the
outbox — all in the caller's transaction, so a change is applied whole or not
at all.

Rules (from the issue and ``../shared/DESIGN.md``):

* A manager may act on behalf of a person only if every door the person can
  open belongs to the manager's portfolios; otherwise the person must
  self-activate with the code printed on the card.
* Self-activation checks the code; wrong codes get one generic error and are
  rate-limited per person.
* A lost card is revoked everywhere at once; the answer lists the doors that
  still accept it until they sync.
* Status is derived from versions: an entry changed after a door's synced
  version is pending at that door.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import (
    DEFAULT_MOBILE_CREDENTIAL_LIFETIME_S,
    AuditAck,
    AuditBatch,
    CredentialKind,
    MobileCredential,
    ScopeKind,
)
from protocol.crypto import ed25519_public_from_bytes

from .errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PortfolioRuleError,
    RateLimitedError,
)
from .keys import SigningKey, current_key
from .models import (
    AuditRecord,
    Door,
    DoorEntry,
    EmailOutbox,
    Keycard,
    Manager,
    ManagerPortfolio,
    MqttOutbox,
    Person,
    Phone,
    Property,
)
from .sync import (
    BundleCache,
    DoorChange,
    accept_receipt,
    bundle_frame,
    doors_of_person,
    resync_person,
)

__all__ = ["CardStatus", "CloudService", "PersonStatus", "hash_code"]

T = TypeVar("T")

SELF_ACTIVATION_LIMIT = 5
"""Wrong activation codes per person per window before further tries are refused."""
SELF_ACTIVATION_WINDOW_S = 15 * 60


def hash_code(code: str) -> str:
    """How activation codes are stored (SHA-256 hex of the normalised code)."""
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


@dataclass(frozen=True)
class CardStatus:
    """A keycard as the console shows it."""

    uid: str
    status: str
    """``inactive``, ``activation pending``, ``active``, ``deactivation pending``."""
    pending_doors: tuple[str, ...]


@dataclass(frozen=True)
class PersonStatus:
    person_id: str
    name: str
    app_logged_in: bool
    keycards: tuple[CardStatus, ...]
    manual_sync_doors: tuple[str, ...]
    """Offline doors a person who already used the app must sync by phone."""


@dataclass
class CloudService:
    """Operations on one transaction. ``now`` is unix seconds; ``random(n)`` gives n bytes."""

    session: Session
    now: int
    random: Callable[[int], bytes]
    cache: BundleCache = field(default_factory=BundleCache)
    failed_codes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def key(self) -> SigningKey:
        return current_key(self.session)

    # --- lookups ----------------------------------------------------------------------

    def _get(self, model: type[T], ident: object, what: str) -> T:
        row = self.session.get(model, ident)
        if row is None:
            raise NotFoundError(f"no {what} {ident!r}")
        return row

    def person(self, person_id: str) -> Person:
        return self._get(Person, person_id, "person")

    def door(self, door_id: str) -> Door:
        return self._get(Door, door_id, "door")

    def card(self, uid: str) -> Keycard:
        return self._get(Keycard, uid.lower(), "keycard")

    def portfolio_of_door(self, door: Door) -> str:
        return self._get(Property, door.property_id, "property").portfolio_id

    def manager_portfolios(self, manager_id: str) -> set[str]:
        self._get(Manager, manager_id, "manager")
        rows = self.session.execute(
            select(ManagerPortfolio.portfolio_id).where(ManagerPortfolio.manager_id == manager_id)
        ).scalars()
        return set(rows)

    # --- rules ------------------------------------------------------------------------

    def check_portfolio_rule(self, manager_id: str, person_id: str) -> None:
        """Refuse unless every door the person can open is in the manager's portfolios."""
        mine = self.manager_portfolios(manager_id)
        doors = [self.door(d) for d in doors_of_person(self.session, person_id)]
        if not any(self.portfolio_of_door(d) in mine for d in doors):
            raise NotFoundError(f"no person {person_id!r} in your portfolios")
        outside = sorted({d.name for d in doors if self.portfolio_of_door(d) not in mine})
        if outside:
            raise PortfolioRuleError(
                f"this person can also open doors outside your portfolios ({', '.join(outside)}), "
                "so you cannot change their keycard; they must self-activate or self-deactivate "
                "it with the code printed on the card"
            )

    # --- keycard lifecycle ------------------------------------------------------------

    def activate_on_behalf(self, manager_id: str, person_id: str, uid: str) -> list[DoorChange]:
        """A manager activates ``uid`` for ``person_id`` (portfolio rule applies)."""
        self.check_portfolio_rule(manager_id, person_id)
        card = self._assignable(uid, person_id)
        card.person_id, card.state = person_id, "active"
        changes = self._resync(person_id)
        self._email(person_id, "activated", card.uid, manager_id)
        return changes

    def deactivate_on_behalf(self, manager_id: str, person_id: str, uid: str) -> list[DoorChange]:
        self.check_portfolio_rule(manager_id, person_id)
        card = self._held(uid, person_id, "active")
        card.state = "deactivated"
        changes = self._resync(person_id)
        self._email(person_id, "deactivated", card.uid, manager_id)
        return changes

    def self_activate(self, person_id: str, uid: str, code: str) -> list[DoorChange]:
        """The resident activates a card with the code printed on it."""
        self._check_code(person_id, uid, code)
        card = self._assignable(uid, person_id)
        card.person_id, card.state = person_id, "active"
        return self._resync(person_id)

    def self_deactivate(self, person_id: str, uid: str) -> list[DoorChange]:
        card = self._held(uid, person_id, "active")
        card.state = "deactivated"
        return self._resync(person_id)

    def report_lost(
        self,
        person_id: str,
        uid: str,
        *,
        replacement: str | None = None,
        replacement_code: str | None = None,
        manager_id: str | None = None,
    ) -> tuple[list[DoorChange], list[str]]:
        """Revoke a lost card everywhere; optionally activate a replacement.

        Returns the changes and the doors that still accept the old card (until they sync).
        """
        if manager_id is not None:
            self.check_portfolio_rule(manager_id, person_id)
        card = self._held(uid, person_id, "active", "deactivated")
        card.state = "lost"
        if replacement is not None:
            if manager_id is None:
                self._check_code(person_id, replacement, replacement_code or "")
            new = self._assignable(replacement, person_id)
            new.person_id, new.state = person_id, "active"
        changes = self._resync(person_id)
        return changes, self.doors_accepting(card.uid)

    def _assignable(self, uid: str, person_id: str) -> Keycard:
        card = self.card(uid)
        if card.person_id not in (None, person_id):
            raise ConflictError(f"keycard {card.uid} belongs to someone else")
        if card.state in ("active", "lost"):
            raise ConflictError(f"keycard {card.uid} is {card.state}; it cannot be activated again")
        return card

    def _held(self, uid: str, person_id: str, *states: str) -> Keycard:
        card = self.card(uid)
        if card.person_id != person_id:
            raise NotFoundError(f"person {person_id} holds no keycard {uid!r}")
        if card.state not in states:
            raise ConflictError(f"keycard {card.uid} is {card.state}, not {' or '.join(states)}")
        return card

    def _check_code(self, person_id: str, uid: str, code: str) -> None:
        self.person(person_id)
        recent = [
            t
            for t in self.failed_codes.get(person_id, [])
            if t > self.now - SELF_ACTIVATION_WINDOW_S
        ]
        if len(recent) >= SELF_ACTIVATION_LIMIT:
            raise RateLimitedError("too many wrong codes; wait 15 minutes and try again")
        card = self.session.get(Keycard, uid.lower())
        if card is None or not hmac.compare_digest(card.activation_code_hash, hash_code(code)):
            self.failed_codes[person_id] = [*recent, self.now]
            raise InvalidInputError("the card number or the activation code is not right")

    def _resync(self, person_id: str) -> list[DoorChange]:
        return resync_person(
            self.session, person_id, key=self.key, random=self.random, cache=self.cache
        )

    def _email(self, person_id: str, what: str, uid: str, manager_id: str) -> None:
        person, manager = self.person(person_id), self._get(Manager, manager_id, "manager")
        token = self.random(12).hex()
        self.session.add(
            EmailOutbox(
                message_id=f"<{token}.{what}@latchsim.invalid>",
                recipient=person.email,
                subject=f"Your keycard was {what}",
                body=(
                    f"Hello {person.name},\n\n"
                    f"{manager.name} {what} your keycard {uid} on your behalf.\n"
                    "Doors without internet learn of it when a resident's phone opens them; "
                    "the app shows which doors are still pending.\n"
                ),
            )
        )

    # --- status -----------------------------------------------------------------------

    def doors_accepting(self, uid: str) -> list[str]:
        """Doors whose lock has not yet received the revocation of ``uid``."""
        rows = self.session.execute(
            select(DoorEntry, Door)
            .join(Door, Door.id == DoorEntry.door_id)
            .where(
                DoorEntry.kind == int(CredentialKind.KEYCARD),
                DoorEntry.credential_id == uid.lower(),
            )
        )
        return sorted(
            door.id for entry, door in rows if entry.changed_version > door.synced_version
        )

    def person_status(self, person_id: str) -> PersonStatus:
        person = self.person(person_id)
        cards = self.session.execute(
            select(Keycard).where(Keycard.person_id == person_id)
        ).scalars()
        statuses = tuple(self._card_status(c) for c in cards if c.state != "lost")
        pending = {d for s in statuses for d in s.pending_doors}
        offline = {d for d in pending if not self.door(d).online}
        logged_in = (
            self.session.execute(
                select(Phone.id).where(Phone.person_id == person_id, Phone.valid_until > self.now)
            ).first()
            is not None
        )
        manual = tuple(sorted(offline)) if person.used_app else ()
        return PersonStatus(person.id, person.name, logged_in, statuses, manual)

    def _card_status(self, card: Keycard) -> CardStatus:
        rows = self.session.execute(
            select(DoorEntry, Door)
            .join(Door, Door.id == DoorEntry.door_id)
            .where(
                DoorEntry.kind == int(CredentialKind.KEYCARD), DoorEntry.credential_id == card.uid
            )
        )
        pending = tuple(sorted(d.id for e, d in rows if e.changed_version > d.synced_version))
        if card.state == "active":
            return CardStatus(card.uid, "activation pending" if pending else "active", pending)
        return CardStatus(card.uid, "deactivation pending" if pending else "inactive", pending)

    # --- phones -----------------------------------------------------------------------

    def login_phone(self, person_id: str, public_key: bytes) -> MobileCredential:
        """Register a phone key and issue its mobile credential (first-use rule applies)."""
        person = self.person(person_id)
        try:
            ed25519_public_from_bytes(public_key)
        except ValueError:
            raise InvalidInputError("public_key must be 32 bytes of a valid Ed25519 key") from None
        active = self.session.execute(
            select(Keycard.uid).where(Keycard.person_id == person_id, Keycard.state == "active")
        ).first()
        if not person.used_app and active is None:
            raise ForbiddenError(
                "activate your keycard before opening doors with the app for the first time"
            )
        doors = sorted(doors_of_person(self.session, person_id))[:64]
        if not doors:
            raise ForbiddenError("you have no doors to open yet")
        credential = MobileCredential(
            key_epoch=self.key.epoch,
            credential_id=self.random(16),
            person_id=bytes.fromhex(person_id),
            phone_public_key=public_key,
            valid_from=self.now - 300,
            valid_until=self.now + DEFAULT_MOBILE_CREDENTIAL_LIFETIME_S,
            scope_kind=ScopeKind.DOORS,
            scope_ids=tuple(bytes.fromhex(d) for d in doors),
        ).signed(self.key.private)
        self.session.add(
            Phone(
                id=credential.credential_id.hex(),
                person_id=person_id,
                public_key=public_key,
                credential=credential.to_bytes(),
                valid_until=credential.valid_until,
            )
        )
        return credential

    def pending_bundles(self, person_id: str) -> dict[str, bytes]:
        """Door id → bundle frame for every door the person can open that is behind."""
        frames = {}
        for door_id in doors_of_person(self.session, person_id):
            door = self.door(door_id)
            if door.list_version > door.synced_version:
                frames[door_id] = bundle_frame(
                    self.session,
                    door,
                    door.synced_version,
                    key=self.key,
                    random=self.random,
                    cache=self.cache,
                )
        return frames

    # --- from locks -------------------------------------------------------------------

    def receipt(self, door_id: str, payload: bytes) -> int:
        """Verify and record a receipt; return the door's synced version."""
        door = self.door(door_id)
        accept_receipt(self.session, door, payload)
        return door.synced_version

    def audit(self, door_id: str, payload: bytes) -> AuditAck:
        """Verify, store and acknowledge an audit batch (gaps are counted, not fatal)."""
        door = self.door(door_id)
        batch = AuditBatch.verified_from_bytes(
            payload, ed25519_public_from_bytes(door.identity_public)
        )
        if batch.door_id.hex() != door.id:
            raise InvalidInputError("the audit batch is from another door")
        if batch.first_seq > door.audit_next_seq:
            door.audit_gaps += 1
        for event in batch.events:
            if event.seq >= door.audit_next_seq:
                self.session.add(
                    AuditRecord(
                        door_id=door.id,
                        seq=event.seq,
                        time=event.time,
                        kind=event.kind,
                        reason=event.reason,
                        credential_id=event.credential_id.hex(),
                        detail=event.detail,
                    )
                )
        door.audit_next_seq = max(door.audit_next_seq, batch.last_seq + 1)
        return AuditAck(
            door_id=batch.door_id, key_epoch=self.key.epoch, up_to_seq=batch.last_seq
        ).signed(self.key.private)

    def queue(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Add a frame to the MQTT outbox (sent after commit)."""
        self.session.add(MqttOutbox(topic=topic, payload=payload, retain=retain))
