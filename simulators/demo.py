"""``doorsim demo``: the seeds' story end to end, on real parts, narrated step by step.

Theory of operation
-------------------
The story runs in a live :class:`~simulators.building.Building` (SQLite, an MQTT broker,
the cloud API on localhost, MQTT doors, BLE doors on bumble's virtual radio, phones). It
is a list of :data:`STEPS`; each is a coroutine on the shared :class:`Story` that does one
thing the way a person would (a manager's API call, a phone visit, a card held to a
reader), checks the outcome through the real parts — the API's view of a keycard, the
email outbox, a lock's decision on a card tap, the refusal's reason — and returns one line
saying what happened. A failed check raises :class:`ExpectationFailed`.

:func:`run_demo` times each step on the event loop's clock, prints one narrated line per
step (``[ 4] online doors updated ....   16.8 ms  ok      2 doors applied and receipted 19 ms after
    the change``)
and a summary, and stops at the first step that fails: later steps build on it, so they
are listed as skipped rather than run. Every step is bounded by a timeout. The report
says which steps failed; :func:`main` (and ``python -m simulators.demo``) exits 1 if any
did, else 0.

The scene before the story (step 1) is the world's past: Ben's keycard was activated by
the manager, Chloe — who lives in two portfolios — self-activated hers with the code
printed on it, and Ana has opened doors with the app before, so her phone is logged in.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import httpx
from sqlalchemy import select

from cloud.models import Door
from phone_bridge.phone import Phone, PhoneError, PhoneVisit
from protocol import Reason

from .building import Building, BuildingConfig

__all__ = [
    "STEPS",
    "DemoReport",
    "ExpectationFailed",
    "StepResult",
    "Story",
    "main",
    "run_demo",
]

MAYA = "Maya Chen"
ANA, BEN, CHLOE = "Ana Ruiz", "Ben Okafor", "Chloe Martin"
ANA_CARD, ANA_NEW_CARD, BEN_CARD, CHLOE_CARD = "card-1", "card-2", "card-6", "card-3"
BASEMENT: Final = "Tower basement"
ONLINE_WITHIN_S: Final = 2.0
"""How soon after a change every online door must hold it (applied and receipted)."""
STEP_TIMEOUT_S: Final = 30.0
DEMO_CONFIG: Final = BuildingConfig(extra_online_doors=1)
"""The demo's building: the seeded world plus one more online door at Harbor Tower."""


class ExpectationFailed(Exception):
    """An expected outcome did not happen; the message says what happened instead."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`ExpectationFailed` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ExpectationFailed(message)


def body(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of an answer with ``status``; anything else fails the expectation."""
    expect(
        response.status_code == status,
        f"{response.request.method} {response.request.url.path}: "
        f"{response.status_code} {response.text[:200]}",
    )
    return response.json()


@dataclass
class Story:
    """The building and what earlier steps learnt (changes, phones, times)."""

    building: Building
    phones: dict[str, Phone] = field(default_factory=dict)
    changed_at: float = 0.0
    """Loop time at which the last change's API answer arrived."""
    changes: list[dict[str, Any]] = field(default_factory=list)
    """The last change's ``changes``: ``{door_id, version}`` per door."""

    @property
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def names(self, refs: Sequence[dict[str, Any]]) -> list[str]:
        return sorted(str(ref["name"]) for ref in refs)

    async def doors_of(self, who: str) -> list[str]:
        """The doors resident ``who`` can open, as the API tells them (sorted names)."""
        return self.names((await self.person(who, who))["doors"])

    def offline(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if not self.building.locks[n].online]

    async def change(self, method: str, path: str, who: str, json: Any = None) -> Any:
        """A change through the API; remember when it was answered and what it changed."""
        answer = body(await self.building.api(method, path, who, json))
        self.changed_at, self.changes = self.now, list(answer.get("changes", []))
        return answer

    async def person(self, who: str, viewer: str) -> dict[str, Any]:
        """``who`` as ``viewer`` sees them (a manager's console, or a resident's /me)."""
        path = "/v1/me" if viewer == who else f"/v1/people/{self.building.person_id(who)}"
        found: dict[str, Any] = body(await self.building.api("GET", path, viewer))
        return found

    async def card(self, who: str, viewer: str, label: str) -> dict[str, Any]:
        uid = self.building.card_uid(label)
        cards = (await self.person(who, viewer))["keycards"]
        (card,) = [c for c in cards if c["uid"] == uid]
        return dict(card)

    async def online_doors_hold_the_change(self) -> tuple[list[str], float]:
        """Wait until every online door the last change touched applied it and the cloud
        has its receipt; return their names and the seconds since the change."""
        b = self.building
        wanted = {b.door_name(c["door_id"]): int(c["version"]) for c in self.changes}
        online = {n: v for n, v in wanted.items() if b.locks[n].online}

        def receipted() -> bool:
            with b.sessions() as session:
                rows = session.scalars(select(Door).where(Door.name.in_(online)))
                synced = {d.name: d.synced_version for d in rows}
            return all(synced.get(n, 0) >= v for n, v in online.items())

        def applied() -> bool:
            return all(b.locks[n].version >= v for n, v in online.items())

        await b.wait_until("online doors apply the change", applied)
        await b.wait_until("the cloud receives their receipts", receipted, reads_database=True)
        took = self.now - self.changed_at
        expect(took <= ONLINE_WITHIN_S, f"online doors took {took:.3f} s (> {ONLINE_WITHIN_S} s)")
        return sorted(online), took

    async def visit(self, who: str, door: str, *, unlock: bool = True) -> PhoneVisit:
        """``who``'s phone visits ``door``; a phone error fails the expectation, naming it."""
        phone = self.phones[who]
        try:
            return await phone.visit(self.building.door_id(door), unlock=unlock)
        except PhoneError as error:
            raise ExpectationFailed(f"{who}'s phone at {door}: {error}") from error


# --- the steps ------------------------------------------------------------------------------


async def scene(story: Story) -> str:
    """Before the story: Ben's card active, Chloe's self-activated, Ana's phone logged in."""
    b = story.building
    ben, card = b.person_id(BEN), b.card_uid(BEN_CARD)
    await story.change("POST", f"/v1/people/{ben}/keycards/{card}/activate", MAYA)
    await story.online_doors_hold_the_change()
    chloe_card, code = b.card_uid(CHLOE_CARD), b.card_code(CHLOE_CARD)
    path = f"/v1/me/keycards/{chloe_card}/activate"
    await story.change("POST", path, CHLOE, {"code": code})
    b.record_app_use(ANA)
    story.phones[ANA] = phone = await b.phone(ANA)
    await phone.login(b.token(ANA))
    await story.online_doors_hold_the_change()
    expect((await story.person(ANA, MAYA))["app_logged_in"], "Ana's app is not logged in")
    return "Ben's card active, Chloe self-activated hers, Ana's app logged in"


async def activate(story: Story) -> str:
    b = story.building
    path = f"/v1/people/{b.person_id(ANA)}/keycards/{b.card_uid(ANA_CARD)}/activate"
    answer = await story.change("POST", path, MAYA)
    (card,) = [c for c in answer["person"]["keycards"] if c["uid"] == b.card_uid(ANA_CARD)]
    expect(card["status"] == "activation pending", f"the card is {card['status']!r}")
    return f"{MAYA} activated {ANA}'s card {card['uid']}: {card['label']}"


async def email_recorded(story: Story) -> str:
    emails = [e for e in story.building.emails_to(ANA) if "activated" in e.subject]
    expect(len(emails) == 1, f"{len(emails)} activation emails to {ANA}")
    (email,) = emails
    expect(MAYA in email.body, f"the email does not say who acted: {email.body!r}")
    return f"to {email.recipient}: {email.subject!r}"


async def online_updated(story: Story) -> str:
    doors, took = await story.online_doors_hold_the_change()
    expect(bool(doors), "the change touched no online door")
    return f"{', '.join(doors)}: applied and receipted {took * 1000:.0f} ms after the change"


async def offline_pending(story: Story) -> str:
    card = await story.card(ANA, MAYA, ANA_CARD)
    pending, offline = story.names(card["pending_doors"]), story.offline(await story.doors_of(ANA))
    expect(card["status"] == "activation pending", f"the console shows {card['label']!r}")
    expect(pending == offline, f"pending at {pending}, offline doors are {offline}")
    return f"console: {card['label']}: {', '.join(pending)}"


async def told_to_sync(story: Story) -> str:
    me = await story.person(ANA, ANA)
    doors, offline = story.names(me["manual_sync_doors"]), story.offline(await story.doors_of(ANA))
    expect(doors == offline, f"the app asks to sync {doors}, offline doors are {offline}")
    return f"the app asks {ANA} to sync {', '.join(doors)}"


async def phone_prefetches(story: Story) -> str:
    fetched = await story.phones[ANA].prefetch()
    carried = sorted(story.building.door_name(d) for d in fetched.doors)
    offline = story.offline(await story.doors_of(ANA))
    expect(fetched.online, "the phone could not reach the cloud")
    expect(carried == offline, f"the phone carries bundles for {carried}, not {offline}")
    return f"{ANA}'s phone carries {len(carried)} sealed bundles"


async def phone_opens_offline_doors(story: Story) -> str:
    said = []
    for door in story.offline(await story.doors_of(ANA)):
        start = story.now
        visit = await story.visit(ANA, door)
        first = visit.first or visit.report
        expect(visit.report.opened, f"{door} did not open: {visit.report.reason}")
        expect(first.bundle_sent, f"no bundle went to {door}")
        expect(visit.drain.uploaded > 0 and not visit.drain.offline, f"{door}: nothing uploaded")
        versions = f"v{first.version_before}->v{visit.report.version_after}"
        said.append(f"{door} opened, {versions} in {(story.now - start) * 1000:.0f} ms")
    return "; ".join(said)


async def pending_clears(story: Story) -> str:
    card = await story.card(ANA, MAYA, ANA_CARD)
    expect(card["status"] == "active", f"the console shows {card['label']!r}")
    return f"console: {card['label']}"


async def card_opens_every_door(story: Story) -> str:
    doors = await story.doors_of(ANA)
    decisions = {door: await story.building.tap(door, ANA_CARD) for door in doors}
    refused = {d: r.name for d, r in decisions.items() if r is not Reason.GRANTED}
    expect(not refused, f"refused at {refused}")
    return f"granted at {len(doors)} of {len(doors)} doors"


async def card_stolen(story: Story) -> str:
    b = story.building
    path = f"/v1/people/{b.person_id(ANA)}/keycards/{b.card_uid(ANA_CARD)}/lost"
    answer = await story.change("POST", path, MAYA, {"replacement": b.card_uid(ANA_NEW_CARD)})
    accepting = story.names(answer["doors_still_accepting"])
    expect(BASEMENT in accepting, f"doors still accepting it: {accepting}")
    return f"replacement {answer['replacement']} issued; still accepted at {', '.join(accepting)}"


async def revoked_online(story: Story) -> str:
    doors, took = await story.online_doors_hold_the_change()
    decisions = {door: await story.building.tap(door, ANA_CARD) for door in doors}
    granted = [d for d, r in decisions.items() if r is Reason.GRANTED]
    expect(not granted, f"the stolen card still opens {granted}")
    reasons = sorted({r.name for r in decisions.values()})
    refusals = ", ".join(reasons)
    return f"{', '.join(doors)} in {took * 1000:.0f} ms: the card is refused ({refusals})"


async def ben_carries_revocation(story: Story) -> str:
    b = story.building
    story.phones[BEN] = phone = await b.phone(BEN)
    await phone.login(b.token(BEN))
    fetched = await phone.prefetch()
    expect(b.door_id(BASEMENT) in fetched.doors, "Ben's phone holds no bundle for the basement")
    visit = await story.visit(BEN, BASEMENT)
    report = visit.report
    expect(report.opened, f"the basement did not open for Ben: {report.reason}")
    expect(report.bundle_sent, "Ben's phone delivered no bundle")
    expect(not visit.drain.offline and visit.drain.uploaded > 0, "the receipt was not uploaded")
    return f"{BEN} opened the basement; lock v{report.version_before}->v{report.version_after}"


async def stolen_refused_at_basement(story: Story) -> str:
    reason = await story.building.tap(BASEMENT, ANA_CARD)
    expect(reason is not Reason.GRANTED, "the stolen card still opens the basement")
    still = [d for d in story.offline(await story.doors_of(ANA)) if d != BASEMENT]
    for door in still:
        path = f"/v1/doors/{story.building.door_id(door)}"
        shown = body(await story.building.api("GET", path, MAYA))
        expect(shown["pending"], f"{door} is not shown pending, though no phone visited it")
    return f"refused ({reason.name}); the console shows {', '.join(still)} still pending"


async def manager_refused(story: Story) -> str:
    b = story.building
    path = f"/v1/people/{b.person_id(CHLOE)}/keycards/{b.card_uid(CHLOE_CARD)}/deactivate"
    before = await story.card(CHLOE, CHLOE, CHLOE_CARD)
    problem = body(await b.api("POST", path, MAYA), 403)
    expect(problem["title"] == "Outside your portfolio", f"refused as {problem['title']!r}")
    expect("self-deactivate" in problem["detail"], f"the reason: {problem['detail']!r}")
    after = await story.card(CHLOE, CHLOE, CHLOE_CARD)
    expect(after == before, f"the refusal changed the card: {after['label']!r}")
    return f"403 {problem['title']}: {problem['detail']}"


async def chloe_self_deactivates(story: Story) -> str:
    b = story.building
    path = f"/v1/me/keycards/{b.card_uid(CHLOE_CARD)}/deactivate"
    answer = await story.change("POST", path, CHLOE)
    (card,) = answer["person"]["keycards"]
    expect(card["status"] != "active", f"the card is still {card['status']!r}")
    doors, took = await story.online_doors_hold_the_change()
    refused = [d for d in doors if await b.tap(d, CHLOE_CARD) is not Reason.GRANTED]
    expect(refused == doors, f"the card still opens {sorted(set(doors) - set(refused))}")
    card = await story.card(CHLOE, CHLOE, CHLOE_CARD)
    pending = story.names(card["pending_doors"])
    expect(card["status"] == "deactivation pending", f"then the app shows {card['label']!r}")
    return (
        f"{', '.join(doors)} refuse the card {took * 1000:.0f} ms later; "
        f"{card['label']}: {', '.join(pending)}"
    )


Step = tuple[str, Callable[[Story], Awaitable[str]]]
STEPS: Final[tuple[Step, ...]] = (
    ("the scene before the story", scene),
    ("manager activates Ana's keycard", activate),
    ("email recorded", email_recorded),
    ("online doors updated", online_updated),
    ("offline doors show Activation Pending", offline_pending),
    ("Ana is told to sync", told_to_sync),
    ("Ana's phone fetches the bundles", phone_prefetches),
    ("phone opens the offline doors", phone_opens_offline_doors),
    ("pending clears", pending_clears),
    ("the card opens every door", card_opens_every_door),
    ("card reported stolen", card_stolen),
    ("revoked online at once", revoked_online),
    ("Ben's phone carries the revocation", ben_carries_revocation),
    ("stolen card refused at the basement", stolen_refused_at_basement),
    ("manager refused outside her portfolio", manager_refused),
    ("Chloe self-deactivates", chloe_self_deactivates),
)


# --- running and reporting -------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """One step's outcome: ``ok`` None means it was skipped after an earlier failure."""

    number: int
    name: str
    ok: bool | None
    ms: float
    detail: str


@dataclass
class DemoReport:
    """Every step's result, the broker used and the total time."""

    broker: str = ""
    steps: list[StepResult] = field(default_factory=list)
    total_ms: float = 0.0

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.ok is False]

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def to_json(self) -> str:
        steps = [
            {"name": s.name, "ok": s.ok, "ms": round(s.ms, 3), "detail": s.detail}
            for s in self.steps
        ]
        document = {
            "ok": self.ok,
            "broker": self.broker,
            "total_ms": round(self.total_ms, 3),
            "failed": [s.name for s in self.failed],
            "steps": steps,
        }
        return json.dumps(document)


def narrate(result: StepResult) -> str:
    """The step's line: number, name, dotted leader, time, verdict, what happened."""
    verdict = {True: "ok", False: "FAILED", None: "skipped"}[result.ok]
    leader = "." * max(3, 40 - len(result.name))
    timing = f"{result.ms:7.1f} ms" if result.ok is not None else " " * 10
    return f"[{result.number:2}] {result.name} {leader} {timing}  {verdict:<7} {result.detail}"


async def _run_step(story: Story, number: int, step: Step) -> StepResult:
    name, action = step
    start = story.now
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            detail, ok = await action(story), True
    except ExpectationFailed as failed:
        detail, ok = str(failed), False
    except Exception as error:  # a part failed: that is an outcome that did not happen
        detail, ok = f"{type(error).__name__}: {error}", False
    return StepResult(number, name, ok, (story.now - start) * 1000, detail)


async def run_demo(
    config: BuildingConfig = DEMO_CONFIG,
    *,
    out: TextIO | None = None,
    steps: Sequence[Step] = STEPS,
) -> DemoReport:
    """Run the story in a new building; print each step to ``out`` (None: print nothing)."""
    loop = asyncio.get_running_loop()
    report, started = DemoReport(), loop.time()

    def say(line: str) -> None:
        if out is not None:
            print(line, file=out, flush=True)

    async with Building(config) as building:
        report.broker = f"{building.broker_kind} at {building.broker_url}"
        online = sum(lock.online for lock in building.locks.values())
        say(
            f"doorsim demo: cloud API {building.base_url} on SQLite, {report.broker}, "
            f"{online} MQTT doors, {len(building.locks) - online} BLE doors on bumble's radio"
        )
        story = Story(building)
        for number, step in enumerate(steps, 1):
            if report.failed:
                result = StepResult(number, step[0], None, 0.0, "not run")
            else:
                result = await _run_step(story, number, step)
            report.steps.append(result)
            say(narrate(result))
    report.total_ms = (loop.time() - started) * 1000
    say(summary(report))
    return report


def summary(report: DemoReport) -> str:
    passed = sum(1 for s in report.steps if s.ok)
    head = f"{passed} of {len(report.steps)} steps ok in {report.total_ms / 1000:.1f} s"
    if report.ok:
        return f"{head}: every expected outcome happened"
    names = ", ".join(f"[{s.number}] {s.name}" for s in report.failed)
    return f"{head}: FAILED {names}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulators.demo [--mqtt URL] [--json]``: the same as ``doorsim demo``."""
    from .cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
