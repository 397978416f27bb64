"""Live mode's scripted events and faults, each done to the real parts.

Theory of operation
-------------------
:func:`schedule_event` puts one scenario event on the run's timeline, dispatched by its
``kind``; each handler acts as the real world would, then registers a
:class:`~simulators.outcome.FaultRecord` whose effect is written when the run ends, from
what really happened:

* ``activate`` / ``deactivate`` / ``lost_card`` — a manager's call (``by``: the portfolio
  rule applies, a refusal is recorded with the cloud's reason) or the person's own
  (``/v1/me``, with the code printed on the card). Every door the change moved is tracked
  until its lock applies it and the cloud has its receipt. While the cloud is down
  (``cloud_restart``) a change waits for it to come back.
* ``broker_outage`` — the embedded broker stops (every session and retained message gone)
  and starts again on its port after ``duration``. A shared Mosquitto is not ours to stop:
  a scenario with an outage then runs on an embedded broker (:func:`needs_own_broker`).
* ``phone_offline`` — the phone's :class:`~._signal.Signal` goes off; it opens doors with
  what it holds and queues uploads; when the signal is back the phone drains its queue.
* ``power_cut`` — the lock's faces stop and its RAM is dropped; after ``duration`` it
  boots from its flash. With ``during_update`` the flash is armed instead and the cut
  comes while the lock commits its next update (:mod:`._lock`), then the same reboot.
* ``clock_drift`` — the lock's :class:`~._clock.LockClock` steps and/or drifts; a
  TIME_SYNC (an online door's next HELLO, a phone's next visit) corrects the lock time.
* ``cloud_restart`` — the cloud's API and MQTT bridge stop and start again after
  ``duration`` on the same port, on the same database.
* ``ble_link_loss`` — the door's :class:`~._radio.LossyBleDoor` drops every phone link
  after the AUTH for ``duration``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx

from phone_bridge.phone import PhoneError

from ..building import BuildingError
from ..scenario import Scenario
from ._lock import CuttableFlash
from ._radio import LossyBleDoor
from ._seed import door_key

if TYPE_CHECKING:
    from ._run import LiveRun

__all__ = ["CutRecord", "needs_own_broker", "power_lost", "schedule_event"]

log = logging.getLogger(__name__)

BACK_FIRST: Final = 0
"""Timeline rank of the end of a fault: before anything else due at the same time."""


def needs_own_broker(scenario: Scenario) -> bool:
    """Whether the scenario stops the broker (so it must run on one we own)."""
    return any(event.kind == "broker_outage" for event in scenario.events)


def schedule_event(run: LiveRun, event: Any) -> None:
    """Put ``event`` on the run's timeline at its time."""
    handler = _HANDLERS.get(event.kind)
    if handler is None:
        run.fault(event.at_s, event.kind, "-", lambda: "not supported in live mode; skipped")
        return
    run.at(event.at_s, functools.partial(handler, run, event))


def _seconds(value: float) -> str:
    return f"{value:,.1f} s"


def _lost_among(run: LiveRun, updates: list[Any]) -> int:
    return sum(
        1
        for u in updates
        if run.stored_version(u.door) < u.version and not run.doors[u.door][1].pending
    )


# --- keycard changes ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """The API call a keycard event makes: whose token, which path, what body."""

    token: str
    path: str
    body: dict[str, Any] | None
    replacement: str | None
    """The name of the spare card a ``lost_card`` issues, if any."""


def _call_for(run: LiveRun, event: Any, what: str) -> _Call:
    """A manager's call on behalf (``by``), or the person's own under ``/v1/me``."""
    b, world = run.building, run.world
    uid, code = b.seed.cards[event.card]
    replacement = world.replacements.get(event.card) if getattr(event, "replace", False) else None
    new = b.seed.cards[replacement] if replacement else None
    if event.by is not None:
        path = f"/v1/people/{b.seed.people[event.person]}/keycards/{uid}/{what}"
        body = None if new is None else {"replacement": new[0]}
        return _Call(world.manager_tokens[event.by], path, body, replacement)
    if what == "activate":
        body = {"code": code}
    else:
        body = None if new is None else {"replacement": new[0], "replacement_code": new[1]}
    path = f"/v1/me/keycards/{uid}/{what}"
    return _Call(world.person_tokens[event.person], path, body, replacement)


async def _card_change(run: LiveRun, event: Any, what: str) -> None:
    call = _call_for(run, event, what)
    started = run.now()
    try:
        response = await run.building.request("POST", call.path, call.token, call.body)
    except httpx.HTTPError as error:
        if run.cloud_back_at is not None:  # the cloud is restarting: the change waits
            run.at(run.cloud_back_at, functools.partial(_card_change, run, event, what))
            return
        _refused(run, event, f"the cloud did not answer: {error!r}")
        return
    if response.status_code != 200:
        problem = response.json() if response.content else {}
        title, detail = problem.get("title"), problem.get("detail")
        _refused(run, event, f"{response.status_code} {title}: {detail}")
        return
    _track(run, started, what, response.json()["changes"])
    if call.replacement is not None:
        run.cards.current[event.person] = call.replacement


def _refused(run: LiveRun, event: Any, why: str) -> None:
    run.tracker.refused_changes += 1
    who = event.by or event.person
    text = f"{who} could not {event.kind.replace('_', ' ')} {event.card}: refused: {why}"
    run.fault(event.at_s, event.kind, event.person, lambda: text)


def _track(run: LiveRun, started: float, what: str, changes: list[dict[str, Any]]) -> None:
    names = {door_id: key for key, door_id in run.building.seed.doors.items()}
    doors = [
        (names[c["door_id"]], run.lock(names[c["door_id"]]).online, int(c["version"]))
        for c in changes
    ]
    holds = {key: run.stored_version(key) for key, _, _ in doors}
    run.tracker.change(started, what != "activate", doors, holds=holds, now=run.now())


def _changer(what: str) -> Callable[[LiveRun, Any], Awaitable[None]]:
    async def change(run: LiveRun, event: Any) -> None:
        await _card_change(run, event, what)

    return change


# --- broker, cloud, phone -----------------------------------------------------------------


async def _broker_outage(run: LiveRun, event: Any) -> None:
    b = run.building
    try:
        await b.stop_broker()
    except BuildingError as error:
        why = f"not injected: {error}"
        run.fault(event.at_s, event.kind, "broker", lambda: why)
        return
    down, until = run.now(), event.at_s + event.duration_s
    online = sum(lock.online for lock in b.locks.values())
    back: dict[str, float] = {}

    async def restart() -> None:
        await b.restart_broker()
        back["at"] = run.now()

    run.at(until, restart, rank=BACK_FIRST)

    def effect() -> str:
        held = [
            u for u in run.tracker.updates if u.online and down <= u.at_s < back.get("at", until)
        ]
        synced = [u.synced_s - back["at"] for u in held if u.synced_s is not None and "at" in back]
        after = f", all receipted within {_seconds(max(synced))} of the restart" if synced else ""
        note = f" ({run.broker_note})" if run.broker_note else ""
        return (
            f"broker stopped for {_seconds(event.duration_s)}{note}: {online} online doors and the "
            f"cloud's bridge cut off; {len(held)} door updates made meanwhile, "
            f"{len(synced)} receipted after the restart{after}; {_lost_among(run, held)} lost"
        )

    run.fault(event.at_s, event.kind, "broker", effect)


async def _cloud_restart(run: LiveRun, event: Any) -> None:
    b = run.building
    duration = float(getattr(event, "duration_s", 0.0))
    await b.stop_cloud()
    run.cloud_back_at = event.at_s + duration
    pending_before = sum(state.pending for _, state in run.doors.values())

    async def start() -> None:
        await b.start_cloud()
        run.cloud_back_at = None

    run.at(event.at_s + duration, start, rank=BACK_FIRST)

    def effect() -> str:
        return (
            f"cloud API and MQTT bridge stopped for {_seconds(duration)} and started again on the "
            f"same port and database ({pending_before} doors pending when it stopped); "
            f"changes waited for it, phones queued their uploads"
        )

    run.fault(event.at_s, event.kind, "cloud", effect)


async def _phone_offline(run: LiveRun, event: Any) -> None:
    live = run.phones.get(event.person)
    if live is None:
        run.fault(event.at_s, event.kind, event.person, lambda: "no phone: no effect")
        return
    phone, signal = live.phone, live.signal
    signal.online = False
    refused_before = signal.refused
    seen: dict[str, int] = {}

    async def back() -> None:
        seen["queued"] = len(await asyncio.to_thread(phone.store.uploads))
        seen["refused"] = signal.refused - refused_before
        signal.online = True
        if phone.logged_in is None:
            return  # never logged in: nothing was queued
        try:
            result = await phone.drain()
            seen["drained"], seen["left"] = result.uploaded, result.waiting
        except PhoneError as error:
            log.warning("%s's phone could not drain: %s", event.person, error)

    run.at(event.at_s + event.duration_s, back, rank=BACK_FIRST)

    def effect() -> str:
        return (
            f"no signal for {_seconds(event.duration_s)}: {seen.get('refused', 0)} cloud calls "
            f"failed; {seen.get('queued', 0)} uploads held in the phone's queue, "
            f"{seen.get('drained', 0)} drained when the signal came back "
            f"({seen.get('left', 0)} left)"
        )

    run.fault(event.at_s, event.kind, event.person, effect)


# --- locks ----------------------------------------------------------------------------------


@dataclass
class CutRecord:
    """A power cut armed for a lock's next update, and what it did."""

    armed_s: float
    duration_s: float
    cut_s: float | None = None
    held_before: int | None = None
    cut_version: int | None = None


async def _power_cut(run: LiveRun, event: Any) -> None:
    key = door_key(event.building, event.door)
    target = f"{event.building}/{event.door}"
    if event.during_update:
        flash = run.runtime(key).flash
        assert isinstance(flash, CuttableFlash)
        flash.arm()
        cut = run.cuts[key] = CutRecord(run.now(), event.duration_s)
        run.fault(event.at_s, event.kind, target, functools.partial(_cut_effect, run, key, cut))
        return
    before = run.stored_version(key)
    await run.power_off(key)
    run.at(event.at_s + event.duration_s, functools.partial(run.power_on, key), rank=BACK_FIRST)
    missed = run.tracker.missed_openings

    def effect() -> str:
        return (
            f"no power for {_seconds(event.duration_s)} holding v{before}; booted from flash "
            f"holding v{run.booted_after.get(key, before)}; now holds v{run.stored_version(key)}"
            f" ({run.tracker.missed_openings - missed} openings since found no lock to decide)"
        )

    run.fault(event.at_s, event.kind, target, effect)


def power_lost(run: LiveRun, key: str) -> None:
    """The lock's flash lost power mid-update (called from inside the lock's runtime)."""
    cut = run.cuts.get(key)
    runtime = run.runtime(key)
    flash = runtime.flash
    assert isinstance(flash, CuttableFlash)
    run.off.add(key)
    if cut is None:
        return
    cut.cut_s, cut.cut_version = run.now(), flash.cut_version
    cut.held_before = run.booted_state(key).held.version
    run.background(run.building.stop_face(run.lock(key)))
    run.at(cut.cut_s + cut.duration_s, functools.partial(run.power_on, key), rank=BACK_FIRST)


def _cut_effect(run: LiveRun, key: str, cut: CutRecord) -> str:
    if cut.cut_s is None:
        flash = run.runtime(key).flash
        if isinstance(flash, CuttableFlash):
            flash.armed = False
        return "armed for the lock's next update; none came before the end of the run"
    after = run.booted_after.get(key)
    booted = (
        "still off at the end"
        if after is None
        else f"booted after {_seconds(cut.duration_s)} holding v{after}"
    )
    mix = "the old list, no mix" if after == cut.held_before else f"held v{cut.held_before} before"
    now = run.stored_version(key)
    redelivered = (
        f"v{cut.cut_version} delivered again and now held"
        if cut.cut_version is not None and now >= cut.cut_version
        else "the update still shown pending"
    )
    return (
        f"power lost at {cut.cut_s:,.1f} s while committing v{cut.cut_version} (bundle received, "
        f"commit torn, no receipt sent); {booted} ({mix}); {redelivered}"
    )


async def _clock_drift(run: LiveRun, event: Any) -> None:
    key = door_key(event.building, event.door)
    clock = run.clocks[key]
    syncs = run.booted_state(key).time_sync_seq
    clock.disturb(step_s=event.step_s, ppm=event.ppm)

    def effect() -> str:
        state = run.booted_state(key)
        error = int(clock()) + state.clock_offset - run.clock.wall()
        how = [f"stepped {event.step_s:+,g} s"] if event.step_s else []
        how += [f"running {event.ppm:+,g} ppm"] if event.ppm else []
        fixed = (
            "corrected by a cloud-signed TIME_SYNC"
            if state.time_sync_seq > syncs
            else "no TIME_SYNC reached it (an online door gets one at its next connect, an "
            "offline door at a phone's next visit)"
        )
        return f"the lock's clock {' and '.join(how)}; {fixed}; off by {error:+,d} s at the end"

    run.fault(event.at_s, event.kind, f"{event.building}/{event.door}", effect)


async def _ble_link_loss(run: LiveRun, event: Any) -> None:
    key = door_key(event.building, event.door)
    run.lossy.add(key)
    face = run.lock(key).ble
    if isinstance(face, LossyBleDoor):
        face.lossy = True
    drops_before = face.drops if isinstance(face, LossyBleDoor) else 0
    seen: dict[str, int] = {}

    async def end() -> None:
        run.lossy.discard(key)
        now = run.lock(key).ble
        if isinstance(now, LossyBleDoor):
            now.lossy = False
        if now is face and isinstance(face, LossyBleDoor):
            seen["drops"] = face.drops - drops_before

    run.at(event.at_s + event.duration_s, end, rank=BACK_FIRST)

    def effect() -> str:
        drops = seen.get("drops")
        dropped = "links dropped" if drops is None else f"{drops} phone links dropped"
        return (
            f"{dropped} after the unlock, mid-transfer, for {_seconds(event.duration_s)}; the "
            f"door holds v{run.stored_version(key)} at the end, "
            f"{'still pending' if run.doors[key][1].pending else 'in sync with the cloud'}"
        )

    run.fault(event.at_s, event.kind, f"{event.building}/{event.door}", effect)


_HANDLERS: Final[dict[str, Callable[[LiveRun, Any], Awaitable[None]]]] = {
    "activate": _changer("activate"),
    "deactivate": _changer("deactivate"),
    "lost_card": _changer("lost"),
    "broker_outage": _broker_outage,
    "phone_offline": _phone_offline,
    "power_cut": _power_cut,
    "clock_drift": _clock_drift,
    "cloud_restart": _cloud_restart,
    "ble_link_loss": _ble_link_loss,
}
