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
  rate-limited per person: after ``SELF_ACTIVATION_LIMIT`` wrong codes within
  ``SELF_ACTIVATION_WINDOW_S``, every try is refused until the oldest leaves the
  window. The wrong codes are rows (:class:`~cloud.models.CodeAttempt`), so the
  limit holds across restarts and across server processes. A check locks the
  person's row first (``SELECT … FOR NO KEY UPDATE``; a SQLite transaction holds
  the database's write lock from its start), deletes the
  person's attempts older than the window, counts the rest and, for a wrong code,
  adds one and raises :class:`~cloud.errors.WrongCodeError`. That error is marked
  ``commit_before_raise``: the request's transaction is committed rather than
  rolled back, so the attempt survives the refusal, and the lock, held until that
  commit, makes parallel guesses count one after another. Callers check the code
  before changing anything, so that commit holds nothing but the attempt.
* A lost card is revoked everywhere at once; the answer lists the doors that
  still accept it until they sync.
* Status is derived from versions: an entry changed after a door's synced
  version is pending at that door.

The keycard lifecycle, the hot path, runs on raw statements (:mod:`cloud.sql`,
:mod:`cloud.keycard_rows`), locking person, then card, then doors; what locks upload
(receipts, audit batches) is :class:`~cloud.lock_uploads.LockUploads`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from protocol import (
    DEFAULT_MOBILE_CREDENTIAL_LIFETIME_S,
    CredentialKind,
    MobileCredential,
    ScopeKind,
)
from protocol.crypto import (
    ed25519_public_from_bytes,
    x25519_private_from_seed,
    x25519_public_from_bytes,
)
from protocol.doorcode import DOORCODE_SECRET_SIZE, DoorcodeKind, DoorcodeMatch, check_doorcode
from protocol.doorcode import issue_doorcode as make_doorcode

from .errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PortfolioRuleError,
    RateLimitedError,
    WrongCodeError,
)
from .keycard_rows import assignable, held, lock_person, set_card
from .keys import SigningKey, current_key, key_of
from .lock_uploads import LockUploads
from .models import (
    Door,
    DoorEntry,
    EmailOutbox,
    Grant,
    Keycard,
    Manager,
    ManagerPortfolio,
    Person,
    Phone,
    Property,
)
from .sql import Sql, marks
from .sync import (
    BundleCache,
    DoorChange,
    GrantTerms,
    door_bundle,
    doors_of_person,
    granted_door_ids,
    granted_doors,
    openable_doors,
    resync,
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
class CloudService(LockUploads):
    """Operations on one transaction. ``now`` is unix seconds; ``random(n)`` gives n bytes."""

    session: Session
    now: int
    random: Callable[[int], bytes]
    cache: BundleCache = field(default_factory=BundleCache)
    raw: Sql | None = None
    """The raw transaction of :func:`cloud.raw_tx.raw_service`: the keycard lifecycle
    runs on it, and the session holds no connection (ORM operations are refused)."""

    @property
    def key(self) -> SigningKey:
        return current_key(self.session)

    def statements(self, *, writes: bool = True) -> AbstractContextManager[Sql]:
        """Raw statements in this service's transaction (see :mod:`cloud.sql`): on a
        session's connection, or the raw transaction's (:func:`cloud.raw_tx.raw_service`)."""
        return self._sql(writes=writes)

    @contextmanager
    def _sql(self, *, writes: bool = True) -> Iterator[Sql]:
        """Raw statements in this service's transaction (see :mod:`cloud.sql`)."""
        if self.raw is not None:
            yield self.raw
            return
        with Sql(self.session, writes=writes) as sql:
            yield sql

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

    def check_portfolio_rule(self, manager_id: str, person_id: str) -> str:
        """Refuse unless every door the person can open is in the manager's portfolios.

        Returns the manager's name, for the email that tells the person what was done.
        """
        with self._sql(writes=False) as sql:
            return self._portfolio_rule(sql, manager_id, person_id)

    def _portfolio_rule(self, sql: Sql, manager_id: str, person_id: str) -> str:
        rows = sql.rows(
            "SELECT m.name, mp.portfolio_id FROM manager m"
            " LEFT JOIN manager_portfolio mp ON mp.manager_id = m.id WHERE m.id = ?",
            [manager_id],
        )
        if not rows:
            raise NotFoundError(f"no manager {manager_id!r}")
        manager = rows[0]
        mine = {portfolio for _, portfolio in rows if portfolio is not None}
        doors = openable_doors(sql, person_id)
        if not any(portfolio in mine for _, _, portfolio in doors):
            raise NotFoundError(f"no person {person_id!r} in your portfolios")
        outside = sorted({name for _, name, portfolio in doors if portfolio not in mine})
        if outside:
            raise PortfolioRuleError(
                f"this person can also open doors outside your portfolios ({', '.join(outside)}), "
                "so you cannot change their keycard; they must self-activate or self-deactivate "
                "it with the code printed on the card"
            )
        return str(manager[0])

    # --- keycard lifecycle (raw statements: the hot path, see cloud.sql) ---------------
    #
    # Each change locks the person's row first (resync and the code check lock it too:
    # one order, person then card then doors, so two changes never deadlock), reads the
    # card, and changes it only if it is still as read (:func:`_set_card`): two managers
    # activating one card for two people cannot both succeed.

    def activate_on_behalf(self, manager_id: str, person_id: str, uid: str) -> list[DoorChange]:
        """A manager activates ``uid`` for ``person_id`` (portfolio rule applies)."""
        with self._sql() as sql:
            person = lock_person(sql, person_id)
            manager = self._portfolio_rule(sql, manager_id, person_id)
            card = assignable(sql, uid, person_id)
            set_card(sql, card, person_id, "active")
            changes = self._resync_with(sql, [person_id])
            self._email(sql, person_id, person, "activated", card.uid, manager)
        return changes

    def deactivate_on_behalf(self, manager_id: str, person_id: str, uid: str) -> list[DoorChange]:
        with self._sql() as sql:
            person = lock_person(sql, person_id)
            manager = self._portfolio_rule(sql, manager_id, person_id)
            card = held(sql, uid, person_id, "active")
            set_card(sql, card, person_id, "deactivated")
            changes = self._resync_with(sql, [person_id])
            self._email(sql, person_id, person, "deactivated", card.uid, manager)
        return changes

    def self_activate(self, person_id: str, uid: str, code: str) -> list[DoorChange]:
        """The resident activates a card with the code printed on it."""
        self._check_code(person_id, uid, code)  # locks the person
        with self._sql() as sql:
            card = assignable(sql, uid, person_id)
            set_card(sql, card, person_id, "active")
            return self._resync_with(sql, [person_id])

    def self_deactivate(self, person_id: str, uid: str) -> list[DoorChange]:
        with self._sql() as sql:
            lock_person(sql, person_id)
            card = held(sql, uid, person_id, "active")
            set_card(sql, card, person_id, "deactivated")
            return self._resync_with(sql, [person_id])

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
        with self._sql() as sql:
            lock_person(sql, person_id)
            card = held(sql, uid, person_id, "active", "deactivated")
        if replacement is not None and manager_id is None:
            self._check_code(person_id, replacement, replacement_code or "")
        with self._sql() as sql:
            set_card(sql, card, person_id, "lost")
            if replacement is not None:  # after: the lost card itself is no replacement
                set_card(sql, assignable(sql, replacement, person_id), person_id, "active")
            changes = self._resync_with(sql, [person_id])
        return changes, self.doors_accepting(card.uid)

    def _check_code(self, person_id: str, uid: str, code: str) -> None:
        """Check a printed code under the person's rate limit (see the module docstring).

        Call it before changing anything: a wrong code commits the transaction.
        """
        with self._sql() as sql:
            lock_person(sql, person_id)
            since = self.now - SELF_ACTIVATION_WINDOW_S
            sql.run("DELETE FROM code_attempt WHERE person_id = ? AND at <= ?", [person_id, since])
            count = sql.row("SELECT count(*) FROM code_attempt WHERE person_id = ?", [person_id])
            if count is not None and count[0] >= SELF_ACTIVATION_LIMIT:
                raise RateLimitedError("too many wrong codes; wait 15 minutes and try again")
            found = sql.row("SELECT activation_code_hash FROM keycard WHERE uid = ?", [uid.lower()])
            if found is None or not hmac.compare_digest(found[0], hash_code(code)):
                sql.run(
                    "INSERT INTO code_attempt (person_id, at) VALUES (?, ?)", [person_id, self.now]
                )
                raise WrongCodeError("the card number or the activation code is not right")

    def _resync(self, person_id: str) -> list[DoorChange]:
        return self._resync_all([person_id])

    def _resync_all(self, person_ids: list[str]) -> list[DoorChange]:
        with self._sql() as sql:
            return self._resync_with(sql, person_ids)

    def _resync_with(self, sql: Sql, person_ids: list[str]) -> list[DoorChange]:
        return resync(sql, person_ids, key=key_of(sql), random=self.random, cache=self.cache)

    def _email(
        self, sql: Sql, person_id: str, person: tuple[str, str], what: str, uid: str, manager: str
    ) -> None:
        """Queue the email telling the person (name, address) what a manager did."""
        name, address = person
        sql.run(
            "INSERT INTO email_outbox"
            " (message_id, recipient, person_id, subject, body, attempts, sent)"
            " VALUES (?, ?, ?, ?, ?, 0, ?)",
            [
                f"<{self.random(12).hex()}.{what}@latchsim.invalid>",
                address,
                person_id,
                f"Your keycard was {what}",
                f"Hello {name},\n\n"
                f"{manager} {what} your keycard {uid} on your behalf.\n"
                "Doors without internet learn of it when a resident's phone opens them; "
                "the app shows which doors are still pending.\n",
                False,
            ],
        )

    # --- status -----------------------------------------------------------------------

    def doors_accepting(self, uid: str) -> list[str]:
        """Doors whose lock has not yet received the revocation of ``uid``."""
        with self._sql(writes=False) as sql:
            rows = sql.rows(
                "SELECT d.id FROM door_entry e JOIN door d ON d.id = e.door_id"
                " WHERE e.kind = ? AND e.credential_id = ?"
                " AND e.changed_version > d.synced_version",
                [int(CredentialKind.KEYCARD), uid.lower()],
            )
        return sorted(door_id for (door_id,) in rows)

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
        try:
            ed25519_public_from_bytes(public_key)
        except ValueError:
            raise InvalidInputError("public_key must be 32 bytes of a valid Ed25519 key") from None
        with self._sql() as sql:
            found = sql.row(
                "SELECT p.used_app, EXISTS (SELECT 1 FROM keycard k"
                " WHERE k.person_id = p.id AND k.state = 'active') FROM person p WHERE p.id = ?",
                [person_id],
            )
            if found is None:
                raise NotFoundError(f"no person {person_id!r}")
            if not found[0] and not found[1]:
                raise ForbiddenError(
                    "activate your keycard before opening doors with the app for the first time"
                )
            doors = granted_door_ids(sql, person_id)[:64]
            if not doors:
                raise ForbiddenError("you have no doors to open yet")
            key = key_of(sql)
            credential = MobileCredential(
                key_epoch=key.epoch,
                credential_id=self.random(16),
                person_id=bytes.fromhex(person_id),
                phone_public_key=public_key,
                valid_from=self.now - 300,
                valid_until=self.now + DEFAULT_MOBILE_CREDENTIAL_LIFETIME_S,
                scope_kind=ScopeKind.DOORS,
                scope_ids=tuple(bytes.fromhex(d) for d in doors),
            ).signed(key.private)
            sql.run(
                "INSERT INTO phone (id, person_id, public_key, credential, valid_until)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    credential.credential_id.hex(),
                    person_id,
                    public_key,
                    credential.to_bytes(),
                    credential.valid_until,
                ],
            )
        return credential

    def pending_bundles(self, person_id: str) -> dict[str, bytes]:
        """Door id → bundle frame for every door the person can open that is behind."""
        with self._sql(writes=False) as sql:
            ids = list(granted_doors(sql, person_id))
            doors = (
                sql.rows(
                    "SELECT id, sealing_public, synced_version, list_version FROM door"
                    f" WHERE id IN {marks(len(ids))} AND list_version > synced_version",
                    ids,
                )
                if ids
                else []
            )
            if not doors:
                return {}
            key, random, cache = key_of(sql), self.random, self.cache  # one key for all
            return {
                door_id: door_bundle(
                    sql, door_id, bytes(sealing), base, target, key=key, random=random, cache=cache
                )
                for door_id, sealing, base, target in doors
            }

    # --- portfolio views, doors, guests and doorcodes (used by the HTTP API) ----------

    def people_in_portfolios(
        self, manager_id: str, query: str = "", *, limit: int = 100, offset: int = 0
    ) -> list[Person]:
        """People holding any grant in the manager's portfolios (``query``: name or email)."""
        stmt = select(Person).where(_granted_in(self.manager_portfolios(manager_id)))
        if query:
            stmt = stmt.where(
                Person.name.icontains(query, autoescape=True)
                | Person.email.icontains(query, autoescape=True)
            )
        stmt = stmt.order_by(Person.name, Person.id).limit(limit).offset(offset)
        return list(self.session.execute(stmt).scalars())

    def emails_in_portfolios(self, manager_id: str, *, limit: int = 100) -> list[EmailOutbox]:
        """The newest emails about people of the manager's portfolios, newest first."""
        stmt = (
            select(EmailOutbox)
            .join(Person, Person.id == EmailOutbox.person_id)
            .where(_granted_in(self.manager_portfolios(manager_id)))
            .order_by(EmailOutbox.id.desc())
            .limit(limit)
        )
        return list(self.session.execute(stmt).scalars())

    def visible_person(self, manager_id: str, person_id: str) -> Person:
        """The person if they hold any grant in the manager's portfolios, else not found."""
        stmt = select(Person).where(
            Person.id == person_id, _granted_in(self.manager_portfolios(manager_id))
        )
        person = self.session.execute(stmt).scalar_one_or_none()
        if person is None:
            raise NotFoundError(f"no person {person_id!r} in your portfolios")
        return person

    def doors_in_portfolios(self, manager_id: str) -> list[Door]:
        """Every door of the manager's portfolios, by name."""
        stmt = (
            select(Door)
            .join(Property, Property.id == Door.property_id)
            .where(Property.portfolio_id.in_(self.manager_portfolios(manager_id)))
            .order_by(Door.name, Door.id)
        )
        return list(self.session.execute(stmt).scalars())

    def managed_door(self, manager_id: str, door_id: str) -> Door:
        """The door if it is in the manager's portfolios, else not found."""
        door = self.session.get(Door, door_id)
        if door is None or self.portfolio_of_door(door) not in self.manager_portfolios(manager_id):
            raise NotFoundError(f"no door {door_id!r} in your portfolios")
        return door

    def openable_door(self, person_id: str, door_id: str) -> tuple[Door, GrantTerms]:
        """The door and the grant by which the person may open it, else not found."""
        grant = doors_of_person(self.session, person_id).get(door_id)
        if grant is None:
            raise NotFoundError(f"no door {door_id!r} among the doors you can open")
        return self.door(door_id), grant

    def pending_people(self, door: Door) -> list[Person]:
        """People with a change (their own entry or a card's) the door has not confirmed."""
        rows = self.session.execute(
            select(DoorEntry.kind, DoorEntry.credential_id).where(
                DoorEntry.door_id == door.id, DoorEntry.changed_version > door.synced_version
            )
        ).all()
        ids = {cid for kind, cid in rows if kind == int(CredentialKind.PERSON)}
        cards = [cid for kind, cid in rows if kind == int(CredentialKind.KEYCARD)]
        if cards:
            holders = self.session.execute(select(Keycard.person_id).where(Keycard.uid.in_(cards)))
            ids.update(p for p in holders.scalars() if p is not None)
        stmt = select(Person).where(Person.id.in_(ids)).order_by(Person.name, Person.id)
        return list(self.session.execute(stmt).scalars())

    def register_door(
        self,
        manager_id: str | None,
        *,
        door_id: str,
        property_id: str,
        name: str,
        online: bool,
        identity_public: bytes,
        sealing_public: bytes,
        doorcode_secret: bytes,
    ) -> list[DoorChange]:
        """Register a provisioned lock in a property of the manager's portfolios (a
        ``manager_id`` of None is the cloud's operator: any property).

        Everyone with a grant on the whole property may open the new door, so they are
        resynced: the door's first bundle carries them.
        """
        prop = self.session.get(Property, property_id)
        mine = None if manager_id is None else self.manager_portfolios(manager_id)
        if prop is None or (mine is not None and prop.portfolio_id not in mine):
            raise NotFoundError(f"no property {property_id!r} in your portfolios")
        if self.session.get(Door, door_id) is not None:
            raise ConflictError(f"door {door_id} is already registered")
        _check_door_keys(identity_public, sealing_public, doorcode_secret)
        self.session.add(
            Door(
                id=door_id,
                property_id=property_id,
                name=name,
                online=online,
                identity_public=identity_public,
                sealing_public=sealing_public,
                doorcode_secret=doorcode_secret,
                key_epoch=self.key.epoch,
            )
        )
        self.session.flush()
        people = self.session.execute(
            select(Grant.person_id).where(Grant.property_id == property_id).distinct()
        ).scalars()
        return self._resync_all(list(people))

    def is_guest(self, person_id: str) -> bool:
        """True when every grant the person holds is a guest grant."""
        kinds = self.session.execute(select(Grant.guest).where(Grant.person_id == person_id))
        flags = list(kinds.scalars())
        return bool(flags) and all(flags)

    def host_grant(self, person_id: str, door_id: str) -> GrantTerms:
        """The resident's own grant on a door they may invite guests to or issue codes for."""
        if self.is_guest(person_id):
            raise ForbiddenError(
                "guests cannot invite guests or issue doorcodes; ask the person who invited you"
            )
        door, grant = self.openable_door(person_id, door_id)
        if not grant.valid_from <= self.now < grant.valid_until:
            raise ForbiddenError(f"your own access to {door.name} is not valid now")
        return grant

    def create_guest(
        self,
        *,
        name: str,
        email: str,
        door_ids: list[str],
        valid_from: int,
        valid_until: int,
        manager_id: str | None = None,
        host_id: str | None = None,
    ) -> tuple[Person, list[DoorChange]]:
        """Invite an app guest to ``door_ids`` for ``[valid_from, valid_until)``.

        Exactly one of ``manager_id`` (doors in their portfolios) and ``host_id`` (a
        resident: doors they can open now, for no longer than their own access) issues it.
        A guest opens doors with the app only, so the keycard first-use rule does not apply.
        """
        self._check_guest_window(valid_from, valid_until)
        if not door_ids:
            raise InvalidInputError("name at least one door the guest may open")
        for door_id in door_ids:
            self._check_guest_door(door_id, valid_until, manager_id, host_id)
        guest = Person(id=self.random(16).hex(), name=name, email=email, used_app=True)
        self.session.add(guest)
        self.session.flush()
        for door_id in sorted(set(door_ids)):
            self.session.add(
                Grant(
                    id=self.random(16).hex(),
                    person_id=guest.id,
                    door_id=door_id,
                    valid_from=valid_from,
                    valid_until=valid_until,
                    schedule=[],
                    guest=True,
                )
            )
        self.session.flush()
        return guest, self._resync(guest.id)

    def _check_guest_window(self, valid_from: int, valid_until: int) -> None:
        if valid_until <= valid_from:
            raise InvalidInputError("the guest's access must end after it starts")
        if valid_from < self.now - GUEST_START_GRACE_S:
            raise InvalidInputError("the guest's access cannot start in the past")
        if valid_until > self.now + GUEST_MAX_AHEAD_S:
            raise InvalidInputError("the guest's access can end at most one year from now")

    def _check_guest_door(
        self, door_id: str, valid_until: int, manager_id: str | None, host_id: str | None
    ) -> None:
        if manager_id is not None:
            self.managed_door(manager_id, door_id)
            return
        if host_id is None:
            raise ForbiddenError("only residents and managers may invite guests")
        if valid_until > self.host_grant(host_id, door_id).valid_until:
            raise InvalidInputError("a guest's access cannot outlast your own access to that door")

    def doorcode(
        self,
        door_id: str,
        kind: DoorcodeKind,
        slot: int,
        *,
        manager_id: str | None = None,
        person_id: str | None = None,
    ) -> tuple[str, DoorcodeMatch]:
        """A keypad code for ``door_id`` valid now (a manager's door, or one the resident opens)."""
        grant = None
        if manager_id is not None:
            door = self.managed_door(manager_id, door_id)
        elif person_id is not None:
            grant = self.host_grant(person_id, door_id)
            door = self.door(door_id)
        else:
            raise ForbiddenError("only residents and managers may issue doorcodes")
        offset = self._get(Property, door.property_id, "property").utc_offset_minutes
        secret, ident = door.doorcode_secret, bytes.fromhex(door.id)
        code = make_doorcode(
            secret=secret,
            door_id=ident,
            kind=kind,
            at=self.now,
            slot=slot,
            utc_offset_minutes=offset,
        )
        match = check_doorcode(
            code, secret=secret, door_id=ident, now=self.now, utc_offset_minutes=offset
        )
        assert match is not None, "a code issued now is valid now"
        if grant is not None and match.valid_until > grant.valid_until:
            raise ForbiddenError("that code would outlast your own access to this door")
        return code, match


GUEST_MAX_AHEAD_S = 365 * 86_400
"""A guest's access may end at most a year from now."""
GUEST_START_GRACE_S = 3_600
"""How far in the past a guest's start may lie (a client's clock may lag)."""


def _granted_in(portfolios: set[str]) -> ColumnElement[bool]:
    """``Person.id`` holds a grant on a door or a property of ``portfolios``."""
    by_door = (
        select(Grant.person_id)
        .join(Door, Door.id == Grant.door_id)
        .join(Property, Property.id == Door.property_id)
        .where(Property.portfolio_id.in_(portfolios))
    )
    by_property = (
        select(Grant.person_id)
        .join(Property, Property.id == Grant.property_id)
        .where(Property.portfolio_id.in_(portfolios))
    )
    return Person.id.in_(by_door) | Person.id.in_(by_property)


def _check_door_keys(identity_public: bytes, sealing_public: bytes, doorcode_secret: bytes) -> None:
    """Refuse keys a lock cannot have: bundles sealed to them would fail later."""
    try:
        ed25519_public_from_bytes(identity_public)
        probe = x25519_private_from_seed(bytes(range(32)))
        probe.exchange(x25519_public_from_bytes(sealing_public))  # rejects low-order points
    except ValueError:
        raise InvalidInputError(
            "identity_public must be the lock's Ed25519 key and sealing_public its X25519 key "
            "(32 bytes each, as the lock's provisioning output shows them)"
        ) from None
    if len(doorcode_secret) != DOORCODE_SECRET_SIZE:
        raise InvalidInputError(f"doorcode_secret must be {DOORCODE_SECRET_SIZE} bytes")
