"""The cloud's HTTP API, served by a real uvicorn and driven over TCP with httpx.

Each test seeds the demo world (:class:`tests.cloud_world.CloudWorld`, whose doors
have real lock controllers) in a SQLite file, builds the app on that engine with
the world's clock and a deterministic random source, and serves it on
127.0.0.1 at a free port. Bundles a phone fetches are applied by the real locks,
and the receipts they sign go back through the API.

Layers: the rules (portfolio, self-activation, lost card, first use), the full
activation flow to *active*, guests and doorcodes (typed on a real lock's
keypad), door registration and health, forged uploads, an authorization matrix
(every role against every other role's and portfolio's objects), garbage input,
a Hypothesis run posting random JSON to every POST route, and the OpenAPI spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from cloud.api import MAX_BODY_BYTES, PROBLEM_JSON, create_app
from cloud.models import Door, EmailOutbox, Grant, Keycard, Person, Phone, Token
from cloud.settings import CloudSettings
from controller.config import ControllerConfig
from controller.core import Controller
from controller.events import MQTT, AccessDecided, Connected, FrameReceived, KeyPressed, Send
from controller.identity import LockIdentity
from protocol import AuditBatch, Reason, decode_message
from protocol.crypto import ed25519_private_from_seed, public_bytes
from protocol.frame import decode_frame
from simulators.fixture import fixed_bytes
from tests.api_server import serve
from tests.cloud_world import CloudWorld, counting_random, world_at
from tests.db_fixtures import fresh_database

ANA, BEN, CHLOE = "Ana Ruiz", "Ben Okafor", "Chloe Martin"
MAYA, OMAR = "Maya Chen", "Omar Haddad"
TOWER = ("Tower lobby", "Tower basement", "Tower gym")
DAY = 86_400


# --- harness ------------------------------------------------------------------------------


@dataclass
class Api:
    """A served app over a seeded world, and the tokens of everyone in it."""

    world: CloudWorld
    http: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens.update(self.world.seed.tokens)

    def call(self, method: str, path: str, who: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if who:
            headers["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        return self.http.request(method, path, headers=headers, **kw)

    def get(self, path: str, who: str | None = None, **kw: Any) -> httpx.Response:
        return self.call("GET", path, who, **kw)

    def post(self, path: str, who: str | None = None, **kw: Any) -> httpx.Response:
        return self.call("POST", path, who, **kw)

    def person(self, name: str) -> str:
        return self.world.seed.people[name]

    def door(self, name: str) -> str:
        return self.world.seed.doors[name]

    def card(self, label: str) -> tuple[str, str]:
        return self.world.seed.cards[label]


@contextmanager
def open_api(url: str, on_outbox: Callable[[], None] | None = None) -> Iterator[Api]:
    """The seeded world in the database at ``url``, its app served by uvicorn, and a client."""
    world = world_at(url)
    settings = CloudSettings(
        database_url=url, clock=lambda: world.now, random=counting_random("api")
    )
    app = create_app(settings, engine=world.engine, on_outbox=on_outbox)
    try:
        with serve(app) as base, httpx.Client(base_url=base, timeout=10) as http:
            yield Api(world, http)
    finally:
        world.engine.dispose()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(f"sqlite:///{tmp_path / 'cloud.db'}") as served:
        yield served


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of a successful response (the problem detail on failure)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def refused(response: httpx.Response, *statuses: int) -> str:
    """Check a problem+json refusal with one of ``statuses``; return its detail."""
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail"}, body
    assert body["status"] == response.status_code and body["title"] and body["detail"]
    return str(body["detail"])


def phone_key(label: str) -> str:
    return public_bytes(ed25519_private_from_seed(fixed_bytes(f"phone {label}"))).hex()


def login_phone(api: Api, who: str) -> str:
    """Log a phone of ``who`` in; its token is stored as ``"<who>'s phone"``."""
    body = ok(api.post("/v1/phones/login", who, json={"public_key": phone_key(who)}), 201)
    api.tokens[f"{who}'s phone"] = body["token"]
    return str(body["token"])


def activate(api: Api, manager: str, person: str, label: str) -> Any:
    uid, _ = api.card(label)
    return ok(api.post(f"/v1/people/{api.person(person)}/keycards/{uid}/activate", manager))


def test_a_change_for_online_doors_wakes_the_mqtt_sender_once_it_commits(tmp_path: Path) -> None:
    woken: list[int] = []
    with open_api(f"sqlite:///{tmp_path / 'cloud.db'}", lambda: woken.append(1)) as api:
        ok(api.get(f"/v1/people/{api.person(ANA)}", MAYA))
        assert woken == []  # a read queues nothing
        refused(api.post(f"/v1/people/{api.person(ANA)}/keycards/00/activate", MAYA), 404)
        assert woken == []  # a refusal rolls back: nothing was queued
        activate(api, MAYA, ANA, "card-1")  # Ana's building has an online door
        assert woken == [1]


def carry(api: Api, phone: str) -> dict[str, Any]:
    """The phone fetches bundles, the locks apply them, the phone uploads the receipts."""
    bundles = ok(api.get("/v1/phones/bundles", phone))["bundles"]
    results = {}
    for door_id, frame in bundles.items():
        receipt = api.world.deliver(door_id, bytes.fromhex(frame))
        upload = {"frame": receipt.to_frame().hex()}
        results[door_id] = ok(api.post(f"/v1/doors/{door_id}/receipts", phone, json=upload))
    return results


def snapshot(world: CloudWorld) -> tuple[object, ...]:
    """Everything an unauthorised request must leave as it was."""
    with world.service() as cloud:
        s = cloud.session
        doors = sorted((d.id, d.list_version, d.synced_version) for d in s.scalars(select(Door)))
        cards = sorted((c.uid, c.state, c.person_id) for c in s.scalars(select(Keycard)))
        counts = [
            s.scalar(select(func.count()).select_from(model))
            for model in (Person, Grant, Token, Phone, EmailOutbox)
        ]
        return (doors, cards, counts)


def card_status(api: Api, who: str, person: str) -> dict[str, Any]:
    person_body = ok(api.get(f"/v1/people/{api.person(person)}", who))
    (card,) = person_body["keycards"]
    return dict(card)


# --- the rules ------------------------------------------------------------------------------


def test_manager_outside_portfolio_is_refused_with_reason_and_nothing_changes(api: Api) -> None:
    uid, _ = api.card("card-2")
    before = snapshot(api.world)
    for manager in (MAYA, OMAR):  # Chloe lives in both portfolios
        response = api.post(f"/v1/people/{api.person(CHLOE)}/keycards/{uid}/activate", manager)
        detail = refused(response, 403)
        assert "self-activate" in detail and "code printed on the card" in detail
        assert response.json()["title"] == "Outside your portfolio"
    assert snapshot(api.world) == before


def test_manager_inside_portfolio_activates_and_the_console_shows_pending(api: Api) -> None:
    body = activate(api, MAYA, ANA, "card-1")
    assert {c["door_id"] for c in body["changes"]} == {api.door(n) for n in TOWER}
    card = card_status(api, MAYA, ANA)
    assert card["status"] == "activation pending"
    assert card["label"] == "Activation Pending (3 doors)"
    assert {d["name"] for d in card["pending_doors"]} == set(TOWER)


def test_self_activation_right_and_wrong_code_and_rate_limit(api: Api) -> None:
    uid, code = api.card("card-3")
    path = f"/v1/me/keycards/{uid}/activate"
    for _ in range(5):
        detail = refused(api.post(path, CHLOE, json={"code": "WRONG"}), 422)
        assert "not right" in detail
    limited = api.post(path, CHLOE, json={"code": code})
    assert "wait 15 minutes" in refused(limited, 429)
    assert limited.headers["retry-after"] == "900"
    api.world.now += 15 * 60 + 1  # the window passes (the app reads the world's clock)
    body = ok(api.post(path, CHLOE, json={"code": code.lower()}))
    assert len(body["changes"]) == 3  # Lofts entrance, Elm Court gate, Elm Court bike room
    assert body["person"]["keycards"][0]["status"] == "activation pending"


def test_a_burst_of_parallel_guesses_is_rate_limited_like_a_sequence(api: Api) -> None:
    uid, _ = api.card("card-3")
    path = f"/v1/me/keycards/{uid}/activate"
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: api.post(path, CHLOE, json={"code": "GUESS"}), range(12)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [422] * 5 + [429] * 7


def test_self_deactivation(api: Api) -> None:
    uid, code = api.card("card-3")
    ok(api.post(f"/v1/me/keycards/{uid}/activate", CHLOE, json={"code": code}))
    body = ok(api.post(f"/v1/me/keycards/{uid}/deactivate", CHLOE))
    (card,) = body["person"]["keycards"]
    assert card["status"] == "deactivation pending" and len(card["pending_doors"]) == 3


def test_lost_card_lists_the_doors_still_accepting_it(api: Api) -> None:
    (uid, _), (new_uid, _) = api.card("card-4"), api.card("card-5")
    activate(api, MAYA, ANA, "card-4")
    for name in TOWER:
        api.world.sync_door(api.door(name))
    path = f"/v1/people/{api.person(ANA)}/keycards/{uid}/lost"
    body = ok(api.post(path, MAYA, json={"replacement": new_uid}))
    assert body["lost"] == uid and body["replacement"] == new_uid
    assert {d["name"] for d in body["doors_still_accepting"]} == set(TOWER)
    assert body["person"]["keycards"][0]["uid"] == new_uid
    api.world.sync_door(api.door("Tower basement"))
    again = refused(api.post(path, MAYA), 409)  # a lost card stays lost
    assert "lost" in again


def test_resident_reports_lost_and_the_replacement_needs_its_code(api: Api) -> None:
    (uid, _), (new_uid, new_code) = api.card("card-4"), api.card("card-5")
    activate(api, MAYA, ANA, "card-4")
    path = f"/v1/me/keycards/{uid}/lost"
    before = snapshot(api.world)
    bad = {"replacement": new_uid, "replacement_code": "NOPE"}
    assert "not right" in refused(api.post(path, ANA, json=bad), 422)
    assert snapshot(api.world) == before
    good = {"replacement": new_uid, "replacement_code": new_code}
    body = ok(api.post(path, ANA, json=good))
    assert {d["name"] for d in body["doors_still_accepting"]} == set(TOWER)


def test_first_use_phone_login_is_refused_before_any_active_keycard(api: Api) -> None:
    detail = refused(api.post("/v1/phones/login", BEN, json={"public_key": phone_key(BEN)}), 403)
    assert "activate your keycard" in detail
    activate(api, MAYA, BEN, "card-6")
    body = ok(api.post("/v1/phones/login", BEN, json={"public_key": phone_key(BEN)}), 201)
    assert len(body["doors"]) == 3 and len(body["token"]) == 48
    assert ok(api.get(f"/v1/people/{api.person(BEN)}", MAYA))["app_logged_in"] is True


def test_a_phone_token_expires_with_its_mobile_credential(api: Api) -> None:
    activate(api, MAYA, ANA, "card-1")
    login_phone(api, ANA)
    ok(api.get("/v1/phones/bundles", f"{ANA}'s phone"))
    api.world.now += 8 * DAY
    assert "expired" in refused(api.get("/v1/phones/bundles", f"{ANA}'s phone"), 401)


# --- the full flow ----------------------------------------------------------------------------


def test_activate_then_phone_carries_bundles_to_locks_and_the_person_becomes_active(
    api: Api,
) -> None:
    full_flow(api)


def test_full_flow_on_postgresql(tmp_path: Path) -> None:
    """The same flow on PostgreSQL (skipped when no server is reachable)."""
    with fresh_database("postgresql", tmp_path) as url, open_api(url) as api:
        full_flow(api)


def full_flow(api: Api) -> None:
    """Activate → pending at 3 doors → phone carries bundles and receipts → active."""
    activate(api, MAYA, ANA, "card-1")
    assert card_status(api, MAYA, ANA)["status"] == "activation pending"
    phone = f"{ANA}'s phone"
    login_phone(api, ANA)
    bundles = ok(api.get("/v1/phones/bundles", phone))["bundles"]
    assert set(bundles) == {api.door(n) for n in TOWER}
    results = carry(api, phone)
    assert all(not r["pending"] and r["synced_version"] == 1 for r in results.values())
    card = card_status(api, MAYA, ANA)
    assert card["status"] == "active" and card["pending_doors"] == []
    assert ok(api.get("/v1/phones/bundles", phone))["bundles"] == {}
    doors = ok(api.get("/v1/doors", MAYA))["doors"]
    assert all(not d["pending"] and d["pending_people"] == [] for d in doors)


def test_receipt_upload_accepts_a_bare_payload_and_is_idempotent(api: Api) -> None:
    activate(api, MAYA, ANA, "card-1")
    gym = api.door("Tower gym")
    with api.world.service() as cloud:
        frame = cloud.pending_bundles(api.person(ANA))[gym]
    receipt = api.world.deliver(gym, frame)
    for _ in range(2):
        body = ok(
            api.post(f"/v1/doors/{gym}/receipts", MAYA, json={"payload": receipt.to_bytes().hex()})
        )
        assert body == {
            "door_id": gym,
            "list_version": 1,
            "synced_version": 1,
            "pending": False,
            "capacity_error": None,
        }


# --- forged and damaged uploads ----------------------------------------------------------------


def test_forged_receipt_and_audit_are_refused_with_a_reason(api: Api) -> None:
    activate(api, MAYA, ANA, "card-1")
    login_phone(api, ANA)
    phone = f"{ANA}'s phone"
    basement, gym = api.door("Tower basement"), api.door("Tower gym")
    bundles = ok(api.get("/v1/phones/bundles", phone))["bundles"]
    receipt = api.world.deliver(basement, bytes.fromhex(bundles[basement]))
    payload = bytearray(receipt.to_bytes())
    payload[20] ^= 0x01  # the version field: a relay claiming another state
    url = f"/v1/doors/{basement}/receipts"
    detail = refused(api.post(url, phone, json={"payload": payload.hex()}), 422)
    assert "signature does not verify" in detail
    frame = bytearray(receipt.to_frame())
    frame[-1] ^= 0xFF
    damaged = refused(api.post(url, phone, json={"frame": frame.hex()}), 422)
    assert "damaged" in damaged and "CRC-32" in damaged
    other = api.post(f"/v1/doors/{gym}/receipts", phone, json={"payload": receipt.to_bytes().hex()})
    assert "signature does not verify" in refused(other, 422)  # gym's key, basement's receipt
    hello = api.world.locks[basement].hello(bytes(16), float(api.world.now)).to_frame()
    assert "not a RECEIPT" in refused(api.post(url, phone, json={"frame": hello.hex()}), 422)
    assert ok(api.get(f"/v1/doors/{basement}", MAYA))["pending"] is True
    forged = bytearray(decode_frame(_audit_frame(api, basement))[2])
    forged[20] ^= 0x01  # an event's time: a relay editing the log
    audit_url = f"/v1/doors/{basement}/audit"
    detail = refused(api.post(audit_url, phone, json={"payload": forged.hex()}), 422)
    assert "audit batch's signature does not verify" in detail
    ok(api.post(url, phone, json={"frame": receipt.to_frame().hex()}))
    assert ok(api.get(f"/v1/doors/{basement}", MAYA))["pending"] is False


def _audit_frame(api: Api, door_id: str) -> bytes:
    """The AUDIT_BATCH frame the lock sends when its MQTT session comes up."""
    actions = api.world.locks[door_id].handle(Connected(MQTT), float(api.world.now))
    frames = [a.frame for a in actions if isinstance(a, Send)]
    (batch,) = [f for f in frames if isinstance(decode_message(f), AuditBatch)]
    return batch


def test_audit_upload_returns_an_ack_the_lock_accepts(api: Api) -> None:
    activate(api, MAYA, ANA, "card-1")
    lobby = api.door("Tower lobby")
    api.world.sync_door(lobby)
    api.world.now += 60
    body = ok(
        api.post(f"/v1/doors/{lobby}/audit", MAYA, json={"frame": _audit_frame(api, lobby).hex()})
    )
    assert body["door_id"] == lobby and body["up_to_seq"] >= 1
    actions = api.world.locks[lobby].handle(
        FrameReceived(MQTT, bytes.fromhex(body["ack"])), float(api.world.now)
    )
    errors = [a for a in actions if isinstance(a, Send) and a.frame[3] == 0x7F]
    assert errors == [], actions
    door = ok(api.get(f"/v1/doors/{lobby}", MAYA))
    assert door["last_seen"] is not None and door["audit_gaps"] == 0


# --- guests and doorcodes ----------------------------------------------------------------------


def guest_body(api: Api, *doors: str, start: int = 0, length: int = DAY) -> dict[str, Any]:
    now = api.world.now
    return {
        "name": "Gina Guest",
        "email": "gina@example.com",
        "door_ids": [api.door(d) for d in doors],
        "valid_from": now + start,
        "valid_until": now + start + length,
    }


def test_resident_invites_an_app_guest_who_can_log_a_phone_in(api: Api) -> None:
    body = ok(api.post("/v1/me/guests", ANA, json=guest_body(api, "Tower lobby")), 201)
    assert body["person"]["guest"] is True and [d["name"] for d in body["doors"]] == ["Tower lobby"]
    api.tokens["guest"] = body["token"]
    me = ok(api.get("/v1/me", "guest"))
    assert me["doors"] == [{"id": api.door("Tower lobby"), "name": "Tower lobby"}]
    login = ok(api.post("/v1/phones/login", "guest", json={"public_key": phone_key("g")}), 201)
    assert login["doors"] == [api.door("Tower lobby")]
    lobby = ok(api.get(f"/v1/doors/{api.door('Tower lobby')}", MAYA))
    assert [p["name"] for p in lobby["pending_people"]] == ["Gina Guest"]
    assert "guests cannot" in refused(
        api.post("/v1/me/guests", "guest", json=guest_body(api, "Tower lobby")), 403
    )


def test_a_guest_token_stops_signing_in_when_the_guest_window_ends(api: Api) -> None:
    body = ok(api.post("/v1/me/guests", ANA, json=guest_body(api, "Tower lobby")), 201)
    api.tokens["guest"] = body["token"]
    ok(api.get("/v1/me", "guest"))
    api.world.now += DAY - 1
    ok(api.get("/v1/me", "guest"))
    api.world.now += 1
    assert "expired" in refused(api.get("/v1/me", "guest"), 401)


@pytest.mark.parametrize(
    ("start", "length", "reason"),
    [
        (0, 366 * DAY, "one year"),
        (0, 0, "end after it starts"),
        (-2 * DAY, DAY, "past"),
    ],
)
def test_guest_windows_are_bounded(api: Api, start: int, length: int, reason: str) -> None:
    body = guest_body(api, "Tower lobby", start=start, length=length)
    assert reason in refused(api.post("/v1/me/guests", ANA, json=body), 422)


def test_guests_only_within_the_issuers_rights(api: Api) -> None:
    ok(api.post("/v1/guests", MAYA, json=guest_body(api, "Lofts entrance", length=300 * DAY)), 201)
    refused(api.post("/v1/guests", MAYA, json=guest_body(api, "Elm Court gate")), 404)
    refused(api.post("/v1/me/guests", ANA, json=guest_body(api, "Elm Court gate")), 404)
    refused(api.post("/v1/guests", ANA, json=guest_body(api, "Tower lobby")), 403)


def type_code(api: Api, door_id: str, code: str) -> Reason:
    """Type ``code`` on the door's real keypad; return the lock's decision."""
    lock, now = api.world.locks[door_id], float(api.world.now)
    decisions = [
        a for key in code for a in lock.handle(KeyPressed(key), now) if isinstance(a, AccessDecided)
    ]
    assert len(decisions) == 1
    return decisions[0].reason


def test_doorcodes_issued_by_resident_and_manager_open_the_real_lock(api: Api) -> None:
    gym = api.door("Tower gym")
    daily = ok(api.post(f"/v1/doors/{gym}/doorcodes", ANA, json={"kind": "daily", "slot": 7}))
    assert daily["code"].startswith("107") and len(daily["code"]) == 8
    assert daily["valid_until"] - daily["valid_from"] == DAY
    quarter = ok(api.post(f"/v1/doors/{gym}/doorcodes", MAYA, json={"kind": "quarter_hour"}))
    assert quarter["code"].startswith("200")
    assert quarter["valid_from"] <= api.world.now < quarter["valid_until"]
    assert type_code(api, gym, daily["code"]) is Reason.GRANTED
    assert type_code(api, gym, quarter["code"]) is Reason.GRANTED
    refused(api.post(f"/v1/doors/{gym}/doorcodes", OMAR, json={"kind": "daily"}), 404)
    refused(api.post(f"/v1/doors/{gym}/doorcodes", CHLOE, json={"kind": "daily"}), 404)


# --- doors -----------------------------------------------------------------------------------


def new_lock(api: Api, label: str) -> tuple[str, LockIdentity]:
    door_id = fixed_bytes(f"new door {label}", 16).hex()
    identity = LockIdentity.generate(
        door_id=bytes.fromhex(door_id),
        property_id=bytes(16),
        doorcode_secret=fixed_bytes(f"new code {label}"),
        random=counting_random(f"new lock {label}"),
    )
    return door_id, identity


def registration(door_id: str, property_id: str, identity: LockIdentity) -> dict[str, Any]:
    return {
        "id": door_id,
        "property_id": property_id,
        "name": "Tower roof",
        "online": False,
        "identity_public": identity.identity_public.hex(),
        "sealing_public": identity.sealing_public.hex(),
        "doorcode_secret": identity.doorcode_secret.hex(),
    }


def test_register_a_door_then_sync_it_and_its_health_shows(api: Api) -> None:
    door_id, identity = new_lock(api, "roof")
    tower = api.world.seed.properties["Harbor Tower"]
    body = registration(door_id, tower, identity)
    registered = ok(api.post("/v1/doors", MAYA, json=body), 201)
    door = registered["door"]
    assert door["pending"] and door["synced_version"] == 0
    assert door["list_version"] == 1  # one version for all the building's residents
    assert {p["name"] for p in door["pending_people"]} == {ANA, BEN}
    assert "already registered" in refused(api.post("/v1/doors", MAYA, json=body), 409)
    refused(api.post("/v1/doors", OMAR, json={**body, "id": "ab" * 16}), 404)
    with api.world.service() as cloud:
        cloud_public = cloud.key.public
    api.world.locks[door_id], _ = Controller.provision(
        identity,
        cloud_public,
        ControllerConfig(),
        random=counting_random("roof rt"),
        now=float(api.world.now),
        wall_time=api.world.now,
    )
    api.world.sync_door(door_id)
    door = ok(api.get(f"/v1/doors/{door_id}", MAYA))
    assert not door["pending"] and door["pending_people"] == [] and door["capacity_error"] is None
    assert door_id in {d["id"] for d in ok(api.get("/v1/doors", MAYA))["doors"]}
    assert door_id not in {d["id"] for d in ok(api.get("/v1/doors", OMAR))["doors"]}


def test_register_refuses_keys_no_lock_can_have(api: Api) -> None:
    door_id, identity = new_lock(api, "bad")
    body = registration(door_id, api.world.seed.properties["Harbor Tower"], identity)
    detail = refused(api.post("/v1/doors", MAYA, json={**body, "sealing_public": "00" * 32}), 422)
    assert "X25519" in detail


def test_lists_show_only_the_callers_portfolio(api: Api) -> None:
    names = {p["name"] for p in ok(api.get("/v1/people", OMAR))["people"]}
    assert names == {CHLOE}
    names = {p["name"] for p in ok(api.get("/v1/people", MAYA, params={"q": "OKA"}))["people"]}
    assert names == {BEN}
    assert ok(api.get("/v1/people", MAYA, params={"q": "%"}))["people"] == []
    doors = {d["name"] for d in ok(api.get("/v1/doors", OMAR))["doors"]}
    assert doors == {"Elm Court gate", "Elm Court bike room"}


# --- authorization -------------------------------------------------------------------------------


def test_every_role_against_every_other_roles_and_portfolios_objects(api: Api) -> None:
    activate(api, MAYA, ANA, "card-1")
    login_phone(api, ANA)
    chloe_uid, chloe_code = api.card("card-3")
    ok(api.post(f"/v1/me/keycards/{chloe_uid}/activate", CHLOE, json={"code": chloe_code}))
    guest = ok(api.post("/v1/me/guests", ANA, json=guest_body(api, "Tower lobby")), 201)
    api.tokens["guest"] = guest["token"]
    before = snapshot(api.world)
    mismatches = [
        (who, method, path, response.status_code)
        for who, method, path, body, expected in authorization_cases(api, chloe_uid)
        if not _refused_as(response := api.call(method, path, who, json=body), expected)
    ]
    assert mismatches == []
    assert snapshot(api.world) == before


def _refused_as(response: httpx.Response, expected: int) -> bool:
    problem = response.headers.get("content-type") == PROBLEM_JSON
    return response.status_code == expected and problem and bool(response.json()["detail"])


def authorization_cases(api: Api, chloe_uid: str) -> list[tuple[str | None, str, str, Any, int]]:
    """(who, method, path, body, expected status) — never a 2xx."""
    ana, ben, chloe = api.person(ANA), api.person(BEN), api.person(CHLOE)
    lobby, gate = api.door("Tower lobby"), api.door("Elm Court gate")
    uid1, uid2 = api.card("card-1")[0], api.card("card-2")[0]
    phone = f"{ANA}'s phone"
    code = {"kind": "daily"}
    upload = {"payload": "00"}
    guest = guest_body(api, "Tower lobby")
    door = {
        **registration("cd" * 16, api.world.seed.properties["Harbor Tower"], new_lock(api, "x")[1])
    }
    cases: list[tuple[str | None, str, str, Any, int]] = [
        (OMAR, "GET", f"/v1/people/{ana}", None, 404),
        (OMAR, "POST", f"/v1/people/{ana}/keycards/{uid1}/deactivate", None, 404),
        (OMAR, "POST", f"/v1/people/{ben}/keycards/{uid2}/activate", None, 404),
        (OMAR, "POST", f"/v1/people/{ana}/keycards/{uid1}/lost", None, 404),
        (OMAR, "GET", f"/v1/doors/{lobby}", None, 404),
        (OMAR, "POST", f"/v1/doors/{lobby}/doorcodes", code, 404),
        (OMAR, "POST", f"/v1/doors/{lobby}/receipts", upload, 404),
        (OMAR, "POST", f"/v1/doors/{lobby}/audit", upload, 404),
        (OMAR, "POST", "/v1/guests", guest, 404),
        (OMAR, "POST", "/v1/doors", door, 404),
        (MAYA, "GET", f"/v1/doors/{gate}", None, 404),
        (MAYA, "POST", f"/v1/doors/{gate}/doorcodes", code, 404),
        (MAYA, "POST", f"/v1/doors/{gate}/receipts", upload, 404),
        (MAYA, "POST", f"/v1/people/{chloe}/keycards/{chloe_uid}/deactivate", None, 403),
        (MAYA, "GET", "/v1/me", None, 403),
        (MAYA, "POST", f"/v1/me/keycards/{uid2}/activate", {"code": "X"}, 403),
        (MAYA, "POST", "/v1/me/guests", guest, 403),
        (MAYA, "POST", "/v1/phones/login", {"public_key": phone_key("m")}, 403),
        (MAYA, "GET", "/v1/phones/bundles", None, 403),
        (ANA, "GET", "/v1/people", None, 403),
        (ANA, "GET", f"/v1/people/{ben}", None, 404),
        (ANA, "GET", f"/v1/people/{chloe}", None, 404),
        (ANA, "POST", f"/v1/people/{ana}/keycards/{uid1}/deactivate", None, 403),
        (ANA, "GET", "/v1/doors", None, 403),
        (ANA, "GET", f"/v1/doors/{lobby}", None, 403),
        (ANA, "POST", "/v1/doors", door, 403),
        (ANA, "POST", "/v1/guests", guest, 403),
        (ANA, "POST", f"/v1/doors/{gate}/doorcodes", code, 404),
        (ANA, "POST", f"/v1/doors/{lobby}/receipts", upload, 403),
        (ANA, "POST", "/v1/me/guests", guest_body(api, "Elm Court gate"), 404),
        (ANA, "POST", f"/v1/me/keycards/{chloe_uid}/deactivate", None, 404),
        (ANA, "POST", f"/v1/me/keycards/{chloe_uid}/lost", None, 404),
        (ANA, "GET", "/v1/phones/bundles", None, 403),
        (phone, "GET", "/v1/me", None, 403),
        (phone, "GET", f"/v1/people/{ana}", None, 403),
        (phone, "POST", "/v1/phones/login", {"public_key": phone_key("p")}, 403),
        (phone, "POST", f"/v1/me/keycards/{uid1}/deactivate", None, 403),
        (phone, "GET", "/v1/doors", None, 403),
        (phone, "POST", f"/v1/doors/{lobby}/doorcodes", code, 403),
        (phone, "POST", f"/v1/doors/{gate}/receipts", upload, 404),
        (phone, "POST", f"/v1/doors/{gate}/audit", upload, 404),
        (CHLOE, "GET", f"/v1/people/{ana}", None, 404),
        (CHLOE, "POST", f"/v1/doors/{lobby}/doorcodes", code, 404),
        (CHLOE, "POST", f"/v1/me/keycards/{uid1}/deactivate", None, 404),
        ("guest", "POST", "/v1/me/guests", guest, 403),
        ("guest", "POST", f"/v1/doors/{lobby}/doorcodes", code, 403),
        ("guest", "GET", f"/v1/people/{ana}", None, 404),
    ]
    for method, path in ROUTES:
        concrete = path.format(person_id=ana, uid=uid1, door_id=lobby)
        cases.append((None, method, concrete, None, 401))
        cases.append(("not-a-token", method, concrete, None, 401))
    return cases


# --- garbage -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One served world for tests whose requests must all be refused (or may change little)."""
    with open_api(f"sqlite:///{tmp_path_factory.mktemp('api') / 'cloud.db'}") as served:
        yield served


def raw(data: bytes) -> dict[str, Any]:
    """Request arguments posting ``data`` as if it were JSON."""
    return {"content": data, "headers": {"content-type": "application/json"}}


NOWHERE = "ab" * 16
LOGIN, ACTIVATE = "/v1/phones/login", "/v1/me/keycards/00/activate"
CODES, RECEIPTS = f"/v1/doors/{NOWHERE}/doorcodes", f"/v1/doors/{NOWHERE}/receipts"
GUEST_WITH_SURROGATE = b'{"name": "\\ud800", "email": "a@b", "door_ids": [], "valid_from": 0}'
GARBAGE: list[tuple[str, str, str | None, dict[str, Any], int]] = [
    ("bad json", LOGIN, ANA, raw(b'{"public_key": '), 422),
    ("not an object", LOGIN, ANA, {"json": ["a"]}, 422),
    ("no body", LOGIN, ANA, {}, 422),
    ("wrong type", LOGIN, ANA, {"json": {"public_key": 7}}, 422),
    ("bad hex", LOGIN, ANA, {"json": {"public_key": "zz" * 32}}, 422),
    ("short key", LOGIN, ANA, {"json": {"public_key": "ab"}}, 422),
    ("extra field", LOGIN, ANA, {"json": {"public_key": "00" * 32, "admin": True}}, 422),
    ("huge token", LOGIN, "t" * 10_000, {"json": {"public_key": "00" * 32}}, 401),
    ("huge string", ACTIVATE, ANA, {"json": {"code": "A" * 200_000}}, 422),
    ("too large", ACTIVATE, ANA, {"content": b"x" * (MAX_BODY_BYTES + 1)}, 413),
    ("too large chunked", ACTIVATE, ANA, {"content": iter([b"x" * 65_536] * 5)}, 413),
    ("unknown card", "/v1/me/keycards/0102030405/activate", ANA, {"json": {"code": "AB"}}, 422),
    ("lone surrogate", "/v1/me/guests", ANA, raw(GUEST_WITH_SURROGATE), 422),
    ("huge integer", CODES, ANA, raw(b'{"kind": "daily", "slot": ' + b"9" * 5000 + b"}"), 400),
    ("string slot", CODES, ANA, {"json": {"kind": "daily", "slot": "3"}}, 422),
    ("unknown kind", CODES, ANA, {"json": {"kind": "weekly"}}, 422),
    ("unknown door", CODES, ANA, {"json": {"kind": "daily"}}, 404),
    ("malformed door id", "/v1/doors/xyz/doorcodes", ANA, {"json": {"kind": "daily"}}, 422),
    ("odd hex frame", RECEIPTS, MAYA, {"json": {"frame": "abc"}}, 422),
    ("frame and payload", RECEIPTS, MAYA, {"json": {"frame": "00", "payload": "00"}}, 422),
    ("unknown door upload", f"/v1/doors/{NOWHERE}/audit", MAYA, {"json": {"payload": "00"}}, 404),
    ("unknown route", "/v1/nothing", MAYA, {}, 404),
]


@pytest.mark.parametrize(
    ("case", "path", "who", "request_kw", "status"), GARBAGE, ids=[g[0] for g in GARBAGE]
)
def test_garbage_is_a_problem_with_a_detail_never_a_server_error(
    shared_api: Api, case: str, path: str, who: str | None, request_kw: dict[str, Any], status: int
) -> None:
    refused(shared_api.post(path, who, **request_kw), status)


def test_unknown_ids_and_wrong_methods(shared_api: Api) -> None:
    api = shared_api
    refused(api.get(f"/v1/people/{'ab' * 16}", MAYA), 404)
    refused(api.post(f"/v1/people/{api.person(ANA)}/keycards/0102030405/activate", MAYA), 404)
    refused(api.get(f"/v1/doors/{'ab' * 16}", MAYA), 404)
    assert "not allowed" in refused(api.call("DELETE", "/v1/people", MAYA), 405)
    refused(api.get("/v1/people", MAYA, params={"limit": 10_000}), 422)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "code",
        "replacement",
        "replacement_code",
        "name",
        "email",
        "door_ids",
        "valid_from",
        "valid_until",
        "id",
        "property_id",
        "online",
        "identity_public",
        "sealing_public",
        "doorcode_secret",
        "kind",
        "slot",
        "public_key",
        "frame",
        "payload",
    ]
)
HEXISH = st.binary(max_size=40).map(bytes.hex) | st.sampled_from(["daily", "quarter_hour"])
BODIES = JSON | st.dictionaries(FIELDS, JSON | HEXISH, max_size=7)
ROUTES = [
    ("GET", "/v1/people"),
    ("GET", "/v1/people/{person_id}"),
    ("POST", "/v1/people/{person_id}/keycards/{uid}/activate"),
    ("POST", "/v1/people/{person_id}/keycards/{uid}/deactivate"),
    ("POST", "/v1/people/{person_id}/keycards/{uid}/lost"),
    ("POST", "/v1/guests"),
    ("GET", "/v1/me"),
    ("POST", "/v1/me/keycards/{uid}/activate"),
    ("POST", "/v1/me/keycards/{uid}/deactivate"),
    ("POST", "/v1/me/keycards/{uid}/lost"),
    ("POST", "/v1/me/guests"),
    ("GET", "/v1/doors"),
    ("POST", "/v1/doors"),
    ("GET", "/v1/doors/{door_id}"),
    ("POST", "/v1/doors/{door_id}/doorcodes"),
    ("POST", "/v1/doors/{door_id}/receipts"),
    ("POST", "/v1/doors/{door_id}/audit"),
    ("POST", "/v1/phones/login"),
    ("GET", "/v1/phones/bundles"),
    ("GET", "/v1/phones/rotations"),
    ("POST", "/v1/phones/doors/{door_id}/time-sync"),
]
POST_ROUTES = [path for method, path in ROUTES if method == "POST"]


@pytest.fixture(scope="module")
def fuzz_api(shared_api: Api) -> Api:
    """The shared world with a phone logged in, so phone tokens are fuzzed too."""
    activate(shared_api, MAYA, BEN, "card-7")
    login_phone(shared_api, BEN)
    return shared_api


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_random_json_to_every_post_route_is_never_a_server_error(
    fuzz_api: Api, data: st.DataObject
) -> None:
    api = fuzz_api
    template = data.draw(st.sampled_from(POST_ROUTES))
    path = template.format(
        person_id=data.draw(st.sampled_from([*api.world.seed.people.values(), "ab" * 16])),
        uid=data.draw(st.sampled_from([uid for uid, _ in api.world.seed.cards.values()] + ["00"])),
        door_id=data.draw(st.sampled_from([*api.world.seed.doors.values(), "cd" * 16])),
    )
    who = data.draw(st.sampled_from([MAYA, OMAR, ANA, CHLOE, f"{BEN}'s phone", None]))
    if data.draw(st.booleans()):
        response = api.post(path, who, json=data.draw(BODIES))
    else:
        response = api.post(path, who, content=data.draw(st.binary(max_size=300)))
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        refused(response, response.status_code)


# --- the spec ----------------------------------------------------------------------------------


def test_openapi_lists_every_route(shared_api: Api) -> None:
    spec = ok(shared_api.get("/openapi.json"))
    listed = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert listed == set(ROUTES)
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    login = spec["paths"]["/v1/phones/login"]["post"]
    assert PROBLEM_JSON in login["responses"]["403"]["content"]
