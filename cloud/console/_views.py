"""What the console's pages show, read through the service in the request's transaction.

Theory of operation: every builder here only reads. Visibility is the service's:
people come from :meth:`~cloud.service.CloudService.people_in_portfolios` and
:meth:`~cloud.service.CloudService.visible_person`, doors from
:meth:`~cloud.service.CloudService.doors_in_portfolios`, statuses from
:meth:`~cloud.service.CloudService.person_status`, and whether a manager may act
from :meth:`~cloud.service.CloudService.check_portfolio_rule` — the console shows the
rule's own reason instead of the buttons. The few reads the service lacks (a
manager's properties, a person's lost cards, the emails sent to a manager's people)
are plain queries here, each scoped by the service's own answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ..errors import NotFoundError, PortfolioRuleError
from ..models import Door, EmailOutbox, Keycard, Phone, Portfolio, Property
from ..service import CardStatus, CloudService
from ..sync import doors_of_person
from ._errors import sentence

__all__ = [
    "CardView",
    "DoorView",
    "PersonRow",
    "PersonView",
    "PropertyView",
    "doors_view",
    "outbox_view",
    "people_view",
    "person_view",
    "properties_view",
    "property_view",
    "resident_view",
]

MAX_OUTBOX_ROWS = 200


@dataclass(frozen=True)
class CardView:
    """A keycard as a page shows it: status label and the doors still pending."""

    uid: str
    status: str
    label: str
    pending: tuple[str, ...]
    """Names of the doors that have not yet confirmed the card's last change."""
    pending_offline: tuple[str, ...]

    @property
    def active(self) -> bool:
        return self.status in ("active", "activation pending")


@dataclass(frozen=True)
class LostCardView:
    uid: str
    accepting: tuple[str, ...]
    """Names of doors that still accept the lost card until they sync."""


@dataclass(frozen=True)
class AccessView:
    door: str
    property: str
    online: bool


@dataclass(frozen=True)
class PersonRow:
    id: str
    name: str
    email: str
    app_logged_in: bool
    cards: tuple[CardView, ...]


@dataclass(frozen=True)
class PersonView(PersonRow):
    access: tuple[AccessView, ...]
    outside_doors: int
    rule_reason: str | None
    """Why the manager may not act for this person (None: they may)."""
    lost: tuple[LostCardView, ...]
    manual_sync: tuple[str, ...]
    phones: int

    @property
    def waiting_offline(self) -> tuple[str, ...]:
        """Doors without internet that still wait for a phone to carry a card's change."""
        return tuple(sorted({d for c in self.cards for d in c.pending_offline}))


@dataclass(frozen=True)
class PropertyView:
    id: str
    name: str
    portfolio: str
    doors: int


@dataclass(frozen=True)
class DoorView:
    id: str
    name: str
    online: bool
    list_version: int
    synced_version: int
    last_seen: datetime | None
    battery_pct: int | None
    capacity_error: str | None
    pending_people: tuple[tuple[str, str], ...]
    """(person id, name) of everyone with a change the door has not confirmed."""

    @property
    def behind(self) -> int:
        return self.list_version - self.synced_version


def label(status: str, pending: int) -> str:
    """How a keycard's status reads, e.g. ``Activation Pending (3 doors)``."""
    title = status.title()
    return f"{title} ({pending} door{'s' * (pending != 1)})" if pending else title


class _Doors:
    """Door rows read once per request."""

    def __init__(self, service: CloudService) -> None:
        self.service, self._rows = service, dict[str, Door]()

    def get(self, door_id: str) -> Door:
        if door_id not in self._rows:
            self._rows[door_id] = self.service.door(door_id)
        return self._rows[door_id]

    def names(self, door_ids: tuple[str, ...], *, offline_only: bool = False) -> tuple[str, ...]:
        doors = [self.get(d) for d in door_ids]
        return tuple(d.name for d in doors if not (offline_only and d.online))


def _card(doors: _Doors, status: CardStatus) -> CardView:
    return CardView(
        uid=status.uid,
        status=status.status,
        label=label(status.status, len(status.pending_doors)),
        pending=doors.names(status.pending_doors),
        pending_offline=doors.names(status.pending_doors, offline_only=True),
    )


def _row(service: CloudService, doors: _Doors, person_id: str) -> PersonRow:
    person = service.person(person_id)
    status = service.person_status(person_id)
    cards = tuple(_card(doors, c) for c in status.keycards)
    return PersonRow(person.id, person.name, person.email, status.app_logged_in, cards)


def people_view(
    service: CloudService, manager_id: str, query: str, *, limit: int, offset: int
) -> list[PersonRow]:
    """A page of the manager's people matching ``query``."""
    people = service.people_in_portfolios(manager_id, query, limit=limit, offset=offset)
    doors = _Doors(service)
    return [_row(service, doors, p.id) for p in people]


def person_view(service: CloudService, manager_id: str, person_id: str) -> PersonView:
    """One person of the manager's portfolios (anyone else: not found)."""
    service.visible_person(manager_id, person_id)
    try:
        service.check_portfolio_rule(manager_id, person_id)
        reason = None
    except PortfolioRuleError as exc:
        reason = sentence(exc.reason)
    return _detail(service, person_id, service.manager_portfolios(manager_id), reason)


def resident_view(service: CloudService, person_id: str) -> PersonView:
    """A resident's own page: every door of theirs counts as theirs."""
    return _detail(service, person_id, None, None)


def _detail(
    service: CloudService, person_id: str, mine: set[str] | None, reason: str | None
) -> PersonView:
    doors = _Doors(service)
    row = _row(service, doors, person_id)
    status = service.person_status(person_id)
    access, outside = _access(service, doors, person_id, mine)
    return PersonView(
        **vars(row),
        access=access,
        outside_doors=outside,
        rule_reason=reason,
        lost=_lost(service, doors, person_id),
        manual_sync=doors.names(status.manual_sync_doors),
        phones=_phones(service, person_id),
    )


def _access(
    service: CloudService, doors: _Doors, person_id: str, mine: set[str] | None
) -> tuple[tuple[AccessView, ...], int]:
    """The doors the person can open in ``mine`` (None: all), and how many others."""
    shown, outside = [], 0
    for door_id in sorted(doors_of_person(service.session, person_id)):
        door = doors.get(door_id)
        prop = service.session.get(Property, door.property_id)
        if prop is None or (mine is not None and prop.portfolio_id not in mine):
            outside += 1
            continue
        shown.append(AccessView(door.name, prop.name, door.online))
    shown.sort(key=lambda a: (a.property, a.door))
    return tuple(shown), outside


def _lost(service: CloudService, doors: _Doors, person_id: str) -> tuple[LostCardView, ...]:
    stmt = select(Keycard.uid).where(Keycard.person_id == person_id, Keycard.state == "lost")
    uids = sorted(service.session.execute(stmt).scalars())
    return tuple(
        LostCardView(uid, doors.names(tuple(service.doors_accepting(uid)))) for uid in uids
    )


def _phones(service: CloudService, person_id: str) -> int:
    stmt = select(Phone.id).where(Phone.person_id == person_id, Phone.valid_until > service.now)
    return len(service.session.execute(stmt).all())


def properties_view(service: CloudService, manager_id: str) -> list[PropertyView]:
    """The properties of the manager's portfolios, with their door counts."""
    counts: dict[str, int] = {}
    for door in service.doors_in_portfolios(manager_id):
        counts[door.property_id] = counts.get(door.property_id, 0) + 1
    stmt = (
        select(Property, Portfolio.name)
        .join(Portfolio, Portfolio.id == Property.portfolio_id)
        .where(Property.portfolio_id.in_(service.manager_portfolios(manager_id)))
        .order_by(Property.name, Property.id)
    )
    return [
        PropertyView(p.id, p.name, portfolio, counts.get(p.id, 0))
        for p, portfolio in service.session.execute(stmt)
    ]


def property_view(service: CloudService, manager_id: str, property_id: str) -> PropertyView:
    """One property of the manager's portfolios (anyone else's: not found)."""
    for prop in properties_view(service, manager_id):
        if prop.id == property_id:
            return prop
    raise NotFoundError(f"no property {property_id!r} in your portfolios")


def doors_view(service: CloudService, manager_id: str, property_id: str) -> list[DoorView]:
    """The doors of one of the manager's properties, with sync status and who is pending."""
    return [
        DoorView(
            id=door.id,
            name=door.name,
            online=door.online,
            list_version=door.list_version,
            synced_version=door.synced_version,
            last_seen=door.last_seen,
            battery_pct=door.battery_pct,
            capacity_error=door.capacity_error,
            pending_people=tuple((p.id, p.name) for p in service.pending_people(door)),
        )
        for door in service.doors_in_portfolios(manager_id)
        if door.property_id == property_id
    ]


def outbox_view(service: CloudService, manager_id: str) -> list[EmailOutbox]:
    """The newest emails sent to people of the manager's portfolios, newest first."""
    return service.emails_in_portfolios(manager_id, limit=MAX_OUTBOX_ROWS)
