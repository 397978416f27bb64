"""The console's HTML over real HTTP, without a browser: forms, refusals, portfolios.

Theory of operation: the cloud app (console mounted) is served by uvicorn on localhost
(:func:`tests.api_server.serve`) over a seeded world (:mod:`tests.test_console_support`)
on SQLite and, when it is reachable, PostgreSQL,
and :class:`httpx.Client` posts forms as a browser would, cookies included. Every
garbage form — a missing or wrong CSRF token, bad or overlong card numbers and codes,
bad ids, oversized bodies, the wrong content type, repeated fields — gets a page with a
clear message and a 4xx status, and :func:`~tests.test_console_support.snapshot` shows
that nothing changed. Anything outside a manager's portfolios is a 404, whether listed,
guessed by URL, posted to, or streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from html import unescape

import httpx
import pytest

from cloud.console._session import COOKIE
from protocol.crypto import ed25519_private_from_seed, public_bytes
from simulators.fixture import fixed_bytes
from tests.api_server import serve
from tests.test_console_support import (
    ConsoleWorld,
    console_world_at,
    csrf_of,
    sign_in,
    snapshot,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}
PHONE_KEY = public_bytes(ed25519_private_from_seed(fixed_bytes("console html phone"))).hex()


@pytest.fixture
def cw(database_url: str) -> Iterator[ConsoleWorld]:
    """A seeded world on SQLite and, when reachable, on PostgreSQL (tests.db_fixtures)."""
    world = console_world_at(database_url)
    yield world
    world.world.engine.dispose()


@pytest.fixture
def url(cw: ConsoleWorld) -> Iterator[str]:
    with serve(cw.app) as base:
        yield base


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, follow_redirects=False, timeout=10)


@pytest.fixture
def maya(url: str, cw: ConsoleWorld) -> Iterator[httpx.Client]:
    """Maya Chen, manager of Harbor Residential (Ana, Ben; and Chloe, who spans two)."""
    with _client(url) as client:
        sign_in(client, cw.token("Maya Chen"))
        yield client


@pytest.fixture
def chloe(url: str, cw: ConsoleWorld) -> Iterator[httpx.Client]:
    """Chloe Martin, a resident with access in both portfolios."""
    with _client(url) as client:
        sign_in(client, cw.token("Chloe Martin"))
        yield client


def _says(answer: httpx.Response, message: str) -> bool:
    """Whether the page's text holds ``message`` (case and HTML escapes aside)."""
    return message.lower() in unescape(answer.text).lower()


def _csrf(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


# --- signing in ---------------------------------------------------------------------------


def test_pages_need_a_session(url: str, cw: ConsoleWorld) -> None:
    with _client(url) as client:
        for path in ("/console/people", "/console/doors", "/console/outbox", "/console/card"):
            answer = client.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"] == f"/console/sign-in?next={path}"
        before = snapshot(cw.world)
        uid = cw.card("card-1")[0]
        answer = client.post(f"/console/people/{cw.person('Ana Ruiz')}/activate", data={"uid": uid})
        assert answer.status_code == 303
        assert snapshot(cw.world) == before


def test_session_cookie_is_httponly_lax_and_scoped(url: str, cw: ConsoleWorld) -> None:
    with _client(url) as client:
        page = client.get("/console/sign-in")
        form = {"csrf": csrf_of(page.text), "token": cw.token("Maya Chen"), "next": ""}
        answer = client.post("/console/sign-in", data=form)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/people"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/console" in cookie
    assert cw.token("Maya Chen") not in cookie  # a session token of its own


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"token": "x"}, 403, "sign-in form has expired"),
        ({"csrf": "0" * 32, "token": "x"}, 403, "sign-in form has expired"),
        ({"csrf": "CSRF", "token": ""}, 422, "Access token: this field is required"),
        ({"csrf": "CSRF", "token": "t" * 300}, 422, "Access token: enter an access token"),
        ({"csrf": "CSRF", "token": "no such token"}, 422, "Access token: enter an access token"),
        ({"csrf": "CSRF", "token": "f" * 48}, 401, "that access token is not known"),
    ],
)
def test_sign_in_refuses_garbage(
    url: str, cw: ConsoleWorld, form: dict[str, str], status: int, message: str
) -> None:
    before = snapshot(cw.world)
    with _client(url) as client:
        value = _csrf(client, "/console/sign-in")
        sent = {k: value if v == "CSRF" else v for k, v in form.items()}
        answer = client.post("/console/sign-in", data=sent)
        assert answer.status_code == status, answer.text
        assert _says(answer, message), answer.text
        assert f"{COOKIE}=" not in answer.headers.get("set-cookie", "")
    assert snapshot(cw.world) == before


def test_sign_in_never_redirects_off_site(url: str, cw: ConsoleWorld) -> None:
    with _client(url) as client:
        for target in ("https://evil.example/", "//evil.example/console/", "/console/\\evil"):
            csrf = _csrf(client, "/console/sign-in")
            form = {"csrf": csrf, "token": cw.token("Maya Chen"), "next": target}
            answer = client.post("/console/sign-in", data=form)
            assert answer.headers["location"] == "/console/people"


def test_sign_out_ends_the_session_everywhere(url: str, maya: httpx.Client) -> None:
    session = maya.cookies[COOKIE]
    answer = maya.post("/console/sign-out", data={"csrf": _csrf(maya, "/console/people")})
    assert answer.status_code == 303
    with _client(url) as other:
        other.cookies.set(COOKIE, session, path="/console")
        assert other.get("/console/people").status_code == 303  # to the sign-in page


def test_a_session_ends_on_the_server_when_its_cookie_would(
    maya: httpx.Client, cw: ConsoleWorld
) -> None:
    """A stolen cookie replayed after its lifetime signs no one in (the server checks)."""
    assert maya.get("/console/people").status_code == 200
    cw.world.now += 12 * 3600
    assert maya.get("/console/people").status_code == 303  # to the sign-in page


def test_sign_out_needs_the_csrf_token(maya: httpx.Client) -> None:
    answer = maya.post("/console/sign-out", data={"csrf": "0" * 64})
    assert answer.status_code == 403
    assert maya.get("/console/people").status_code == 200


# --- a manager's forms --------------------------------------------------------------------

CARD = "CARD"
"""Stands for card-1's UID in the cases below."""


@pytest.mark.parametrize(
    ("action", "form", "status", "message"),
    [
        ("activate", {"uid": CARD}, 403, "this form has expired"),
        ("activate", {"uid": CARD, "csrf": "0" * 64}, 403, "this form has expired"),
        ("activate", {"uid": CARD, "csrf": "zz<script>"}, 403, "this form has expired"),
        ("activate", {"csrf": "CSRF"}, 422, "Card number: this field is required"),
        ("activate", {"csrf": "CSRF", "uid": "zz"}, 422, "Card number: enter a card number"),
        ("activate", {"csrf": "CSRF", "uid": "a" * 500}, 422, "Card number: enter"),
        ("activate", {"csrf": "CSRF", "uid": "ab\x00cd"}, 422, "Card number: enter"),
        ("activate", {"csrf": "CSRF", "uid": "ab'; DROP TABLE x"}, 422, "Card number: enter"),
        ("activate", {"csrf": "CSRF", "uid": "abcdef"}, 404, "No keycard"),
        ("deactivate", {"csrf": "CSRF", "uid": CARD}, 404, "holds no keycard"),
        ("lost", {"csrf": "CSRF", "uid": CARD}, 404, "holds no keycard"),
        ("lost", {"csrf": "CSRF", "uid": CARD, "replacement": "xyz"}, 422, "Replacement card"),
        ("lost", {"csrf": "CSRF", "uid": CARD, "replacement": CARD}, 422, "a different card"),
    ],
)
def test_manager_forms_refuse_garbage(
    cw: ConsoleWorld,
    maya: httpx.Client,
    action: str,
    form: dict[str, str],
    status: int,
    message: str,
) -> None:
    person = f"/console/people/{cw.person('Ana Ruiz')}"
    uid = cw.card("card-1")[0]
    values = {"CSRF": _csrf(maya, person), CARD: uid}
    sent = {k: values.get(v, v) for k, v in form.items()}
    before = snapshot(cw.world)
    answer = maya.post(f"{person}/{action}", data=sent)
    assert answer.status_code == status, answer.text
    assert _says(answer, message), answer.text
    assert 'role="alert"' in answer.text and "Ana Ruiz" in answer.text  # the page, re-rendered
    assert snapshot(cw.world) == before


def test_malformed_bodies_change_nothing(cw: ConsoleWorld, maya: httpx.Client) -> None:
    person = f"/console/people/{cw.person('Ana Ruiz')}"
    csrf, uid = _csrf(maya, person), cw.card("card-1")[0]
    before = snapshot(cw.world)
    cases = [
        (f"csrf={csrf}&uid={uid}&pad=" + "x" * 9000, FORM, 413, "larger than"),
        (f"csrf={csrf}&uid={uid}&uid={uid}", FORM, 422, "more than once"),
        (
            f'{{"csrf": "{csrf}", "uid": "{uid}"}}',
            {"content-type": "application/json"},
            422,
            "send the form from the console page",
        ),
        (b"csrf=" + csrf.encode() + b"&uid=\xff\xfe", FORM, 422, "not UTF-8"),
        ("&".join(f"f{n}=1" for n in range(50)), FORM, 422, "too many fields"),
    ]
    for body, headers, status, message in cases:
        answer = maya.post(f"{person}/activate", content=body, headers=headers)
        assert answer.status_code == status, (body, answer.text)
        assert _says(answer, message), answer.text
    assert snapshot(cw.world) == before


@pytest.mark.parametrize(
    "path",
    [
        "/console/people/ZZZZ",
        "/console/people/" + "a" * 1000,
        "/console/people/00000000000000000000000000000000",
        "/console/people/%2e%2e%2fetc",
        "/console/doors/00000000000000000000000000000000",
        "/console/doors/not-an-id/live",
        "/console/nowhere",
    ],
)
def test_bad_ids_are_not_found(maya: httpx.Client, path: str) -> None:
    answer = maya.get(path)
    assert answer.status_code == 404, answer.text
    assert "Not found" in answer.text


def test_bad_ids_in_posts_change_nothing(cw: ConsoleWorld, maya: httpx.Client) -> None:
    csrf, uid = _csrf(maya, "/console/people"), cw.card("card-1")[0]
    before = snapshot(cw.world)
    for path in (
        "people/ZZ/activate",
        "people/" + "0" * 32 + "/activate",
        f"people/{cw.person('Ana Ruiz')}/explode",
    ):
        answer = maya.post(f"/console/{path}", data={"csrf": csrf, "uid": uid})
        assert answer.status_code == 404, answer.text
    assert snapshot(cw.world) == before


def test_overlong_search_is_refused_with_a_page(maya: httpx.Client) -> None:
    answer = maya.get("/console/people", params={"q": "a" * 500})
    assert answer.status_code == 422
    assert "Invalid input" in answer.text


def test_search_filters_people(maya: httpx.Client) -> None:
    page = maya.get("/console/people", params={"q": "okafor"}).text
    assert "Ben Okafor" in page and "Ana Ruiz" not in page
    assert "No one matches" in maya.get("/console/people", params={"q": "%_'<x>"}).text


# --- portfolios ---------------------------------------------------------------------------


def test_another_portfolio_is_not_found_even_by_url(url: str, cw: ConsoleWorld) -> None:
    ana, uid = cw.person("Ana Ruiz"), cw.card("card-1")[0]
    tower = cw.world.seed.properties["Harbor Tower"]
    with _client(url) as omar:
        sign_in(omar, cw.token("Omar Haddad"))
        people = omar.get("/console/people").text
        assert "Chloe Martin" in people and "Ana Ruiz" not in people and "Ben Okafor" not in people
        csrf = csrf_of(people)
        before = snapshot(cw.world)
        for path in (
            f"/console/people/{ana}",
            f"/console/people/{ana}/live",
            f"/console/doors/{tower}",
            f"/console/doors/{tower}/live",
        ):
            answer = omar.get(path)
            assert answer.status_code == 404, path
            assert "Ana Ruiz" not in answer.text and "Harbor" not in answer.text
        for action in ("activate", "deactivate", "lost"):
            answer = omar.post(f"/console/people/{ana}/{action}", data={"csrf": csrf, "uid": uid})
            assert answer.status_code == 404
        assert "Harbor Tower" not in omar.get("/console/doors").text
        assert snapshot(cw.world) == before


def test_portfolio_rule_refusal_shows_the_reason(cw: ConsoleWorld, maya: httpx.Client) -> None:
    person = f"/console/people/{cw.person('Chloe Martin')}"
    page = maya.get(person).text
    assert "You cannot change this person" in page
    assert "must self-activate" in page
    assert "/activate" not in page  # no buttons, only the reason
    before = snapshot(cw.world)
    answer = maya.post(f"{person}/activate", data={"csrf": csrf_of(page), "uid": "abcdef01"})
    assert answer.status_code == 403
    assert "outside your portfolios" in answer.text
    assert snapshot(cw.world) == before


def test_activate_lost_and_outbox(cw: ConsoleWorld, maya: httpx.Client) -> None:
    person = f"/console/people/{cw.person('Ana Ruiz')}"
    uid, new = cw.card("card-1")[0], cw.card("card-2")[0]
    answer = maya.post(f"{person}/activate", data={"csrf": _csrf(maya, person), "uid": uid})
    assert answer.status_code == 303
    page = maya.get(answer.headers["location"]).text
    assert "Keycard activated" in page and "Activation Pending (3 doors)" in page
    assert "Tower basement" in page
    people = maya.get("/console/people").text
    assert "Activation Pending (3 doors)" in people
    outbox = maya.get("/console/outbox").text
    assert "Your keycard was activated" in outbox and "ana.ruiz@example.com" in outbox
    form = {"csrf": csrf_of(page), "uid": uid, "replacement": new}
    page = maya.get(maya.post(f"{person}/lost", data=form).headers["location"]).text
    assert "replacement card activated" in page
    assert "Lost cards" in page and "Tower lobby" in page
    assert page.count('data-card-status="') == 1  # the replacement; the lost card moved
    assert f'data-card-status="{new}">Activation Pending (3 doors)' in page


def test_doors_page_lists_pending_people(cw: ConsoleWorld, maya: httpx.Client) -> None:
    with cw.world.service() as cloud:
        cloud.activate_on_behalf(
            cw.world.seed.managers["Maya Chen"], cw.person("Ben Okafor"), cw.card("card-3")[0]
        )
    tower = cw.world.seed.properties["Harbor Tower"]
    assert f"/console/doors/{tower}" in maya.get("/console/doors").text
    page = maya.get(f"/console/doors/{tower}").text
    assert "Tower basement" in page and "BLE only" in page and "Behind by 1" in page
    assert "Ben Okafor" in page


def test_live_stream_sends_the_fragment(cw: ConsoleWorld, maya: httpx.Client) -> None:
    path = f"/console/people/{cw.person('Ana Ruiz')}/live"
    with maya.stream("GET", path) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "retry: 2000"
        assert next(lines) == "event: update"
        assert "Keycards" in "".join(next(lines) for _ in range(3))


# --- the resident page --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "status", "message", "attempts"),
    [
        ({"uid": CARD, "code": "WRONG"}, 403, "this form has expired", 0),
        ({"csrf": "CSRF", "uid": CARD}, 422, "Activation code: this field is required", 0),
        ({"csrf": "CSRF", "uid": CARD, "code": "c" * 65}, 422, "Activation code: enter", 0),
        ({"csrf": "CSRF", "uid": CARD, "code": "caf\u00e9"}, 422, "Activation code: enter", 0),
        ({"csrf": "CSRF", "uid": "no", "code": "1234"}, 422, "Card number: enter", 0),
        ({"csrf": "CSRF", "uid": CARD, "code": "WRONG"}, 422, "is not right", 1),
        ({"csrf": "CSRF", "uid": "abcdef", "code": "WRONG"}, 422, "is not right", 1),
    ],
)
def test_resident_forms_refuse_garbage(
    cw: ConsoleWorld,
    chloe: httpx.Client,
    form: dict[str, str],
    status: int,
    message: str,
    attempts: int,
) -> None:
    values = {"CSRF": _csrf(chloe, "/console/card"), CARD: cw.card("card-2")[0]}
    sent = {k: values.get(v, v) for k, v in form.items()}
    before = snapshot(cw.world)
    answer = chloe.post("/console/card/activate", data=sent)
    assert answer.status_code == status, answer.text
    assert _says(answer, message), answer.text
    after = snapshot(cw.world)
    assert after.pop("attempts") == before.pop("attempts") + attempts  # the rate limit counts
    assert after == before


def test_resident_rate_limit_then_right_code(cw: ConsoleWorld, chloe: httpx.Client) -> None:
    uid, code = cw.card("card-2")
    csrf = _csrf(chloe, "/console/card")
    for _ in range(5):
        answer = chloe.post("/console/card/activate", data={"csrf": csrf, "uid": uid, "code": "0"})
        assert answer.status_code == 422
    answer = chloe.post("/console/card/activate", data={"csrf": csrf, "uid": uid, "code": code})
    assert answer.status_code == 429
    assert "Too many wrong codes. Wait 15 minutes" in answer.text
    cw.world.now += 15 * 60 + 1
    answer = chloe.post("/console/card/activate", data={"csrf": csrf, "uid": uid, "code": code})
    assert answer.status_code == 303
    page = chloe.get(answer.headers["location"]).text
    assert "Your keycard is active" in page
    assert "Open your BLE-only doors with the app" in page and "Elm Court bike room" in page


def test_resident_cannot_reach_manager_pages(
    url: str, chloe: httpx.Client, cw: ConsoleWorld
) -> None:
    for path in ("/console/people", f"/console/people/{cw.person('Chloe Martin')}"):
        assert chloe.get(path).status_code == 303


def test_json_api_is_unchanged(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json").json()
    assert not [p for p in spec["paths"] if p.startswith("/console")]
    answer = httpx.get(f"{url}/v1/people")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"


def test_resident_deactivates_their_own_card(cw: ConsoleWorld, chloe: httpx.Client) -> None:
    uid, code = cw.card("card-2")
    with cw.world.service() as cloud:
        cloud.self_activate(cw.person("Chloe Martin"), uid, code)
    answer = chloe.post(
        "/console/card/deactivate", data={"csrf": _csrf(chloe, "/console/card"), "uid": uid}
    )
    assert answer.status_code == 303
    page = chloe.get(answer.headers["location"]).text
    assert "Your keycard is deactivated" in page and "Deactivation Pending (3 doors)" in page
    again = chloe.post("/console/card/deactivate", data={"csrf": csrf_of(page), "uid": uid})
    assert again.status_code == 409 and _says(again, "is deactivated, not active")


def test_signing_out_ends_live_streams(url: str, cw: ConsoleWorld, maya: httpx.Client) -> None:
    path = f"/console/people/{cw.person('Ana Ruiz')}/live"
    csrf = _csrf(maya, "/console/people")
    with maya.stream("GET", path) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "retry: 2000"
        with _client(url) as other:  # the same session, signed out from another tab
            other.cookies.set(COOKIE, maya.cookies[COOKIE], path="/console")
            assert other.post("/console/sign-out", data={"csrf": csrf}).status_code == 303
        assert "event: gone" in list(lines)  # the stream ended after saying so


def test_a_phone_token_cannot_sign_in(url: str, cw: ConsoleWorld) -> None:
    with cw.world.service() as cloud:  # Ana's card active, so her phone may log in
        manager = cw.world.seed.managers["Maya Chen"]
        cloud.activate_on_behalf(manager, cw.person("Ana Ruiz"), cw.card("card-1")[0])
    resident = {"authorization": f"Bearer {cw.token('Ana Ruiz')}"}
    login = httpx.post(f"{url}/v1/phones/login", json={"public_key": PHONE_KEY}, headers=resident)
    assert login.status_code == 201, login.text
    with _client(url) as client:
        form = {"csrf": _csrf(client, "/console/sign-in"), "token": login.json()["token"]}
        answer = client.post("/console/sign-in", data=form)
    assert answer.status_code == 401
    assert _says(answer, "a phone's token cannot sign in to the console")
