"""Keycard rows on the raw hot path: read a card, lock its person, change it if unchanged.

Theory of operation: the keycard lifecycle in :mod:`cloud.service` runs on raw statements
(:mod:`cloud.sql`). Each change locks the person's row first (``FOR NO KEY UPDATE``, as a
resync does, so every path takes person → card → doors in that order), reads the card, and
changes it only if it is still as read (:func:`set_card`): two requests giving one card to
two people cannot both succeed.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ConflictError, NotFoundError
from .sql import Sql

__all__ = ["CardRow", "assignable", "card_row", "held", "lock_person", "set_card"]


class CardRow(NamedTuple):
    uid: str
    holder: str | None
    state: str


def lock_person(sql: Sql, person_id: str) -> tuple[str, str]:
    """Lock the person's row (``FOR NO KEY UPDATE``, as resync does) and return their
    name and email address; not found: 404."""
    lock = sql.lock("FOR NO KEY UPDATE")
    row = sql.row(f"SELECT name, email FROM person WHERE id = ?{lock}", [person_id])
    if row is None:
        raise NotFoundError(f"no person {person_id!r}")
    return str(row[0]), str(row[1])


def card_row(sql: Sql, uid: str) -> CardRow:
    """A keycard's holder and state (not found: 404)."""
    row = sql.row("SELECT uid, person_id, state FROM keycard WHERE uid = ?", [uid.lower()])
    if row is None:
        raise NotFoundError(f"no keycard {uid.lower()!r}")
    return CardRow(*row)


def assignable(sql: Sql, uid: str, person_id: str) -> CardRow:
    """A card that may be activated for the person."""
    card = card_row(sql, uid)
    if card.holder not in (None, person_id):
        raise ConflictError(f"keycard {card.uid} belongs to someone else")
    if card.state in ("active", "lost"):
        raise ConflictError(f"keycard {card.uid} is {card.state}; it cannot be activated again")
    return card


def held(sql: Sql, uid: str, person_id: str, *states: str) -> CardRow:
    """The person's card, if it is in one of ``states``."""
    card = card_row(sql, uid)
    if card.holder != person_id:
        raise NotFoundError(f"person {person_id} holds no keycard {uid!r}")
    if card.state not in states:
        raise ConflictError(f"keycard {card.uid} is {card.state}, not {' or '.join(states)}")
    return card


def set_card(sql: Sql, card: CardRow, person_id: str, state: str) -> None:
    """Give ``card`` to the person in ``state`` if it is still as read; else a conflict."""
    if card.holder == person_id:  # SET only the state: the holder's index stays untouched
        changed = sql.run(
            "UPDATE keycard SET state = ? WHERE uid = ? AND state = ? AND person_id = ?",
            [state, card.uid, card.state, person_id],
        )
    else:
        holder = "person_id IS NULL" if card.holder is None else "person_id = ?"
        was = [] if card.holder is None else [card.holder]
        changed = sql.run(
            f"UPDATE keycard SET person_id = ?, state = ? WHERE uid = ? AND state = ? AND {holder}",
            [person_id, state, card.uid, card.state, *was],
        )
    if changed != 1:
        raise ConflictError(f"keycard {card.uid} changed meanwhile; look again and retry")
