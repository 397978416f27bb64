"""Live mode's openings: a card held to a reader, a phone's visit over bumble.

Theory of operation
-------------------
Each opening of :func:`simulators.traffic.openings` becomes exactly one
:class:`~simulators.outcome.Decision` at the opening's scenario time, so a live run and a
fast run of one scenario compare decision by decision. The rules are fast mode's
(``simulators/fast/scenario_run.py``, ``scenario_visit.py``), kept in step on purpose:

* **card** — :meth:`~simulators.building.Building.tap` with the person's card: their
  first, or the replacement a ``lost_card`` event issued for it (:attr:`Cards.current`).
* **phone** — the app first refreshes itself when it can reach the cloud: it logs in when
  it holds no mobile credential or one with less than :data:`CREDENTIAL_RENEW_S` left, and
  fetches the pending bundles of every door its person may open when its cache is older
  than :data:`PREFETCH_S` (any person's phone carries any pending bundle for a door it
  opens). Then :meth:`~phone_bridge.phone.Phone.visit`: open, hand over bundles and the
  held AUDIT_ACK, ask for a TIME_SYNC if the lock's clock is off, take the receipt and
  audit batches out, upload them or queue them. The decision is the one the visit ended
  with (a lock that learnt of the person from the bundle the phone carried refuses the
  first AUTH and grants the second).
* **no decision** — a lock without power decides nothing: ``NO_POWER``; a phone that never
  obtained a mobile credential (offline from its first use): ``NO_MOBILE_CREDENTIAL``; a
  visit that failed before the lock decided (the link, the radio): ``NO_LINK``. These are
  not protocol reasons; they count as denied.

Known difference from fast mode: at an online door fast mode's phone only unlocks; a live
phone is the real app and also hands over a bundle it holds for that door (it holds one
only if the door was behind when it fetched, e.g. during a broker outage).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from phone_bridge.phone import Phone, PhoneError, PhoneVisitError
from protocol import Reason

from ..outcome import Decision
from ..traffic import Opening
from ._seed import door_key
from ._signal import Signal

if TYPE_CHECKING:
    from ._run import LiveRun

__all__ = [
    "CREDENTIAL_RENEW_S",
    "NO_LINK",
    "NO_MOBILE_CREDENTIAL",
    "NO_POWER",
    "PREFETCH_S",
    "Cards",
    "LivePhone",
    "open_door",
]

log = logging.getLogger(__name__)

PREFETCH_S: Final = 900.0
"""A phone refreshes its bundle cache when it is older than this (scenario seconds) at a
visit (fast mode's ``PREFETCH_S``)."""
CREDENTIAL_RENEW_S: Final = 86_400
"""A phone logs in again when its mobile credential has less than this left."""
NO_POWER: Final = "NO_POWER"
NO_MOBILE_CREDENTIAL: Final = "NO_MOBILE_CREDENTIAL"
NO_LINK: Final = "NO_LINK"


@dataclass
class LivePhone:
    """A person's phone, its signal, and when it last fetched bundles."""

    phone: Phone
    signal: Signal
    token: str
    """The resident's token the app logs in with."""
    fetched_at: float | None = None


@dataclass
class Cards:
    """Which card each person taps."""

    current: dict[str, str] = field(default_factory=dict)
    """Person → card name (their first; a replacement after a ``lost_card``)."""


async def open_door(run: LiveRun, opening: Opening) -> None:
    """Do ``opening`` and record its decision (see the module docstring)."""
    key = door_key(opening.building, opening.door)
    reason: Reason | str
    if key in run.off:
        reason = NO_POWER
    elif opening.via == "card":
        reason = await run.building.tap(key, run.cards.current[opening.person])
    else:
        reason = await _visit(run, opening, key)
    granted = reason is Reason.GRANTED
    if isinstance(reason, str):
        run.tracker.missed_openings += 1
    name = reason if isinstance(reason, str) else reason.name
    run.tracker.decisions.append(
        Decision(
            opening.at_s, opening.person, opening.building, opening.door, opening.via, granted, name
        )
    )


async def _visit(run: LiveRun, opening: Opening, key: str) -> Reason | str:
    live = run.phones.get(opening.person)
    if live is None:
        return NO_MOBILE_CREDENTIAL
    await _refresh(run, live)
    if live.phone.logged_in is None:
        return NO_MOBILE_CREDENTIAL
    lock = run.lock(key)
    if lock.ble is None:
        return NO_LINK
    try:
        visit = await live.phone.visit(lock.door_id)
    except PhoneVisitError as error:
        log.info("%s's phone at %s: %s", opening.person, key, error)
        return _decided(error.report.reason)
    except PhoneError as error:
        log.info("%s's phone at %s: %s", opening.person, key, error)
        return NO_LINK
    return _decided(visit.report.reason)


def _decided(reason: Reason | None) -> Reason | str:
    """The lock's reason, or ``NO_LINK`` when the visit ended before the lock decided."""
    return NO_LINK if reason is None else reason


async def _refresh(run: LiveRun, live: LivePhone) -> None:
    """Log in and fetch bundles when due and the cloud answers (see the module docstring)."""
    held = await asyncio.to_thread(live.phone.store.login)
    now = run.now()
    if held is None or held.valid_until - run.clock.wall() < CREDENTIAL_RENEW_S:
        try:
            await live.phone.login(live.token)
        except PhoneError as error:
            log.info("phone login failed: %s", error)
            return
    if live.fetched_at is not None and now - live.fetched_at <= PREFETCH_S:
        return
    try:
        fetched = await live.phone.prefetch()
    except PhoneError as error:
        log.info("prefetch failed: %s", error)
        return
    if fetched.online:
        live.fetched_at = now
