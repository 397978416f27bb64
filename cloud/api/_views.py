"""Building responses: the service's objects and statuses as the API's models.

Theory of operation: routes hand what an operation returned to these builders, in
the request's transaction. :class:`Names` reads each door's name once per request;
a keycard's ``label`` is how the console shows its status, e.g.
``Activation Pending (3 doors)``. Builders only read; they never change anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC

from ..models import Door, Person
from ..service import CloudService
from ..sync import DoorChange
from ._schemas import CardOut, ChangeOut, DoorOut, KeycardOut, LostOut, PersonOut, Ref

__all__ = ["Names", "changes_out", "door_out", "keycard_out", "lost_out", "person_out"]


class Names:
    """Door names for one request (each door read once)."""

    def __init__(self, service: CloudService) -> None:
        self.service, self._names = service, dict[str, str]()

    def refs(self, door_ids: Iterator[str] | tuple[str, ...] | list[str]) -> list[Ref]:
        return [Ref(id=d, name=self._name(d)) for d in door_ids]

    def _name(self, door_id: str) -> str:
        if door_id not in self._names:
            self._names[door_id] = self.service.door(door_id).name
        return self._names[door_id]


def _label(status: str, pending: int) -> str:
    title = status.title()
    return f"{title} ({pending} door{'s' * (pending != 1)})" if pending else title


def person_out(service: CloudService, person: Person) -> PersonOut:
    status, names = service.person_status(person.id), Names(service)
    cards = [
        CardOut(
            uid=c.uid,
            status=c.status,
            label=_label(c.status, len(c.pending_doors)),
            pending_doors=names.refs(c.pending_doors),
        )
        for c in status.keycards
    ]
    return PersonOut(
        id=person.id,
        name=person.name,
        email=person.email,
        guest=service.is_guest(person.id),
        app_logged_in=status.app_logged_in,
        keycards=cards,
        manual_sync_doors=names.refs(status.manual_sync_doors),
    )


def changes_out(changes: list[DoorChange]) -> list[ChangeOut]:
    return [ChangeOut(door_id=c.door_id, version=c.version) for c in changes]


def keycard_out(service: CloudService, person_id: str, changes: list[DoorChange]) -> KeycardOut:
    return KeycardOut(
        person=person_out(service, service.person(person_id)), changes=changes_out(changes)
    )


def door_out(service: CloudService, door: Door) -> DoorOut:
    last_seen = door.last_seen
    if last_seen is not None and last_seen.tzinfo is None:
        last_seen = last_seen.replace(tzinfo=UTC)  # SQLite keeps no zone; we store UTC
    return DoorOut(
        id=door.id,
        name=door.name,
        property_id=door.property_id,
        online=door.online,
        list_version=door.list_version,
        synced_version=door.synced_version,
        pending=door.list_version > door.synced_version,
        last_seen=last_seen,
        battery_pct=door.battery_pct,
        list_age_s=door.list_age_s,
        capacity_error=door.capacity_error,
        audit_gaps=door.audit_gaps,
        pending_people=[Ref(id=p.id, name=p.name) for p in service.pending_people(door)],
    )


def lost_out(
    service: CloudService,
    person_id: str,
    uid: str,
    replacement: str | None,
    changes: list[DoorChange],
    accepting: list[str],
) -> LostOut:
    return LostOut(
        person=person_out(service, service.person(person_id)),
        changes=changes_out(changes),
        lost=uid.lower(),
        replacement=replacement.lower() if replacement else None,
        doors_still_accepting=Names(service).refs(accepting),
    )
