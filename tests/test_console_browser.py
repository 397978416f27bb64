"""The console in a real browser: Playwright driving Debian's Chromium against uvicorn.

Theory of operation: each test serves the cloud app (console mounted) over a seeded
world with real lock controllers (:mod:`tests.test_console_support`) on a free port of
127.0.0.1 and drives Chromium (``/usr/bin/chromium``, headless, no sandbox, no network
beyond localhost) through the pages as a person would: labels, buttons, links. The lock
and phone side runs through the cloud's own paths: an online door's receipt as the MQTT
bridge would hand it in (:meth:`~tests.cloud_world.CloudWorld.sync_door`), and a
resident's phone that logs in, fetches the pending bundles, gives each to its lock and
uploads the lock's signed receipt over the HTTP API — while the page, untouched, turns
from *Activation Pending* to *Active* over server-sent events.

Screenshots of the People and a person's page are saved under the test's ``tmp_path``;
with ``LATCHSIM_UPDATE_DOCS=1`` they are also written to ``docs/console-people.png`` and
``docs/console-person.png``. Every test is skipped, saying why, when Chromium or
Playwright is missing (CI installs both: see the report of issue #7).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from protocol.crypto import ed25519_private_from_seed, public_bytes
from simulators.fixture import fixed_bytes
from tests.api_server import serve
from tests.test_console_support import ConsoleWorld, console_world

CHROMIUM = Path(os.environ.get("LATCHSIM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"
WAIT_MS = 15_000
"""How long a live region may take to show a change (it polls every second)."""

if not CHROMIUM.exists():
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; "
        "or set LATCHSIM_CHROMIUM)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
Browser, Page, expect = sync_api.Browser, sync_api.Page, sync_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def cw(tmp_path: Path) -> Iterator[ConsoleWorld]:
    world = console_world(tmp_path)
    yield world
    world.world.engine.dispose()


@pytest.fixture
def url(cw: ConsoleWorld) -> Iterator[str]:
    with serve(cw.app) as base:
        yield base


@pytest.fixture
def page(browser: Browser, url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    problems: list[str] = []  # script errors and CSP violations; a 404 status is expected
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    yield opened
    context.close()  # before the server stops: ends the live streams
    assert problems == []


def _sign_in(page: Page, token: str) -> None:
    page.goto("/console/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("LATCHSIM_UPDATE_DOCS") == "1":
        shutil.copyfile(path, DOCS / name)


def _phone_syncs(cw: ConsoleWorld, url: str, name: str) -> list[str]:
    """A resident's phone logs in, carries every pending bundle to its lock, uploads receipts."""
    key = public_bytes(ed25519_private_from_seed(fixed_bytes(f"console phone {name}")))
    resident = {"authorization": f"Bearer {cw.token(name)}"}
    login = httpx.post(f"{url}/v1/phones/login", json={"public_key": key.hex()}, headers=resident)
    assert login.status_code == 201, login.text
    phone = {"authorization": f"Bearer {login.json()['token']}"}
    bundles = httpx.get(f"{url}/v1/phones/bundles", headers=phone).json()["bundles"]
    for door_id, frame in bundles.items():
        receipt = cw.world.deliver(door_id, bytes.fromhex(frame))
        body = {"payload": receipt.to_bytes().hex()}
        upload = httpx.post(f"{url}/v1/doors/{door_id}/receipts", json=body, headers=phone)
        assert upload.status_code == 200, upload.text
    return sorted(bundles)


def test_sign_in_shows_people(page: Page, cw: ConsoleWorld) -> None:
    _sign_in(page, cw.token("Maya Chen"))
    expect(page.get_by_role("heading", name="People", level=1)).to_be_visible()
    table = page.get_by_role("table")
    for name in ("Ana Ruiz", "Ben Okafor", "Chloe Martin"):
        expect(table.get_by_role("link", name=name)).to_be_visible()
    page.get_by_label("Search by name or email").fill("chloe")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="Chloe Martin")).to_be_visible()
    expect(page.get_by_role("link", name="Ana Ruiz")).to_have_count(0)


def test_activation_goes_from_pending_to_active_as_doors_sync(
    browser: Browser, page: Page, cw: ConsoleWorld, url: str, tmp_path: Path
) -> None:
    uid = cw.card("card-1")[0]
    _sign_in(page, cw.token("Maya Chen"))
    page.get_by_role("link", name="Ana Ruiz").click()
    expect(page.get_by_role("heading", name="Ana Ruiz")).to_be_visible()
    page.get_by_label("Activate a new card: card number").fill(uid)
    page.get_by_role("button", name="Activate", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Keycard activated")
    badge = page.locator(f'[data-card-status="{uid}"]')
    expect(badge).to_have_text("Activation Pending (3 doors)")

    doors = page.context.new_page()
    doors.goto("/console/doors")
    doors.get_by_role("link", name="Harbor Tower").click()
    basement = doors.locator(f'tr[data-door="{cw.door("Tower basement")}"]')
    expect(basement).to_contain_text("Behind by 1")
    expect(basement).to_contain_text("Ana Ruiz")

    cw.world.sync_door(cw.door("Tower lobby"))  # the online door, as the MQTT bridge would
    expect(badge).to_have_text("Activation Pending (2 doors)")
    expect(page.locator("#cards")).to_contain_text("Tower basement, Tower gym")
    _screenshot(page, tmp_path, "console-person.png")
    synced = _phone_syncs(cw, url, "Ana Ruiz")  # the BLE-only doors, by Ana's phone
    assert synced == sorted([cw.door("Tower basement"), cw.door("Tower gym")])
    expect(badge).to_have_text("Active")
    expect(basement).to_contain_text("In sync")
    expect(basement).to_contain_text("No one")
    page.reload()  # the same after a reload: the page was already up to date
    expect(page.locator(f'[data-card-status="{uid}"]')).to_have_text("Active")
    expect(page.get_by_text("Logged in")).to_be_visible()

    with cw.world.service() as cloud:  # another person pending, for the People screenshot
        manager = cw.world.seed.managers["Maya Chen"]
        cloud.activate_on_behalf(manager, cw.person("Ben Okafor"), cw.card("card-3")[0])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="People").click()
    expect(page.get_by_role("row", name="Ben Okafor")).to_contain_text("Activation Pending")
    expect(page.get_by_role("row", name="Ana Ruiz")).to_contain_text("Active")
    _screenshot(page, tmp_path, "console-people.png")


def test_refusal_for_a_person_outside_the_portfolio(page: Page, cw: ConsoleWorld) -> None:
    _sign_in(page, cw.token("Maya Chen"))
    page.get_by_role("link", name="Chloe Martin").click()
    note = page.get_by_role("note")
    expect(note).to_contain_text("You cannot change this person's keycards")
    expect(note).to_contain_text("outside your portfolios")
    expect(note).to_contain_text("self-activate")
    expect(page.get_by_role("button", name="Activate")).to_have_count(0)


def test_self_activation_with_a_wrong_then_the_right_code(page: Page, cw: ConsoleWorld) -> None:
    uid, code = cw.card("card-2")
    _sign_in(page, cw.token("Chloe Martin"))
    expect(page.get_by_role("heading", name="My keycard")).to_be_visible()
    page.get_by_label("Card number").fill(uid)
    page.get_by_label("Activation code").fill("NOT-IT")
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_role("alert")).to_contain_text("activation code is not right")
    expect(page.get_by_role("alert")).to_contain_text("after 5 wrong tries")
    page.get_by_label("Card number").fill(uid)
    page.get_by_label("Activation code").fill(code)
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_role("status")).to_have_text("Your keycard is active.")
    expect(page.locator(f'[data-card-status="{uid}"]')).to_contain_text("Activation Pending")
    step = page.get_by_role("note")
    expect(step).to_contain_text("Open your BLE-only doors with the app to sync them")
    expect(step).to_contain_text("Elm Court bike room")


def test_report_lost_with_a_replacement(page: Page, cw: ConsoleWorld) -> None:
    old, new = cw.card("card-4")[0], cw.card("card-5")[0]
    with cw.world.service() as cloud:
        cloud.activate_on_behalf(cw.world.seed.managers["Maya Chen"], cw.person("Ben Okafor"), old)
    for door in ("Tower lobby", "Tower basement", "Tower gym"):
        cw.world.sync_door(cw.door(door))
    _sign_in(page, cw.token("Maya Chen"))
    page.get_by_role("link", name="Ben Okafor").click()
    expect(page.locator(f'[data-card-status="{old}"]')).to_have_text("Active")
    page.get_by_label("Lost card").select_option(old)
    page.get_by_label("Replacement card number (optional)").fill(new)
    page.get_by_role("button", name="Report lost and revoke").click()
    expect(page.get_by_role("status")).to_contain_text("replacement card activated")
    accepting = page.locator(f'[data-lost-accepting="{old}"]')
    for door in ("Tower lobby", "Tower basement", "Tower gym"):
        expect(accepting).to_contain_text(door)
    expect(page.locator(f'[data-card-status="{new}"]')).to_have_text("Activation Pending (3 doors)")
    cw.world.sync_door(cw.door("Tower basement"))  # the basement learns of the theft
    expect(accepting).not_to_contain_text("Tower basement")


def test_another_portfolio_is_never_shown(page: Page, cw: ConsoleWorld) -> None:
    _sign_in(page, cw.token("Omar Haddad"))
    expect(page.get_by_role("link", name="Chloe Martin")).to_be_visible()
    expect(page.get_by_role("link", name="Ana Ruiz")).to_have_count(0)
    answer = page.goto(f"/console/people/{cw.person('Ana Ruiz')}")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("Ana Ruiz")).to_have_count(0)
    answer = page.goto(f"/console/doors/{cw.world.seed.properties['Harbor Tower']}")
    assert answer is not None and answer.status == 404
