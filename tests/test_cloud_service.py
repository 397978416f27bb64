"""The cloud's rules and sync engine, end to end with real locks (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud.errors import InvalidInputError, PortfolioRuleError, RateLimitedError
from cloud.models import Door, EmailOutbox, MqttOutbox
from cloud.service import SELF_ACTIVATION_WINDOW_S
from tests.cloud_world import CloudWorld, world_at


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:
    """The seeded world on each database (PostgreSQL is skipped when unreachable)."""
    world = world_at(database_url)
    yield world
    world.engine.dispose()


def test_activate_on_behalf_bumps_doors_and_clears_pending_after_receipts(
    world: CloudWorld,
) -> None:
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    uid, _ = world.seed.cards["card-1"]
    with world.service() as cloud:
        changes = cloud.activate_on_behalf(maya, ana, uid)
        assert {c.door_id for c in changes} == {
            world.seed.doors[n] for n in ("Tower lobby", "Tower basement", "Tower gym")
        }
        assert cloud.session.query(EmailOutbox).count() == 1
        online = cloud.session.query(MqttOutbox).count()
        assert online == 1  # only the lobby is online
        status = cloud.person_status(ana)
    assert (
        status.keycards[0].status == "activation pending"
        and len(status.keycards[0].pending_doors) == 3
    )
    for name in ("Tower lobby", "Tower basement", "Tower gym"):
        world.sync_door(world.seed.doors[name])
    with world.service() as cloud:
        status = cloud.person_status(ana)
    assert status.keycards[0].status == "active" and status.keycards[0].pending_doors == ()


def test_manager_outside_portfolio_is_refused_and_nothing_changes(world: CloudWorld) -> None:
    chloe, maya = world.seed.people["Chloe Martin"], world.seed.managers["Maya Chen"]
    uid, _ = world.seed.cards["card-2"]
    with world.service() as cloud:
        versions = {d.id: d.list_version for d in cloud.session.query(Door)}
        with pytest.raises(PortfolioRuleError, match="must self-activate"):
            cloud.activate_on_behalf(maya, chloe, uid)
        assert {d.id: d.list_version for d in cloud.session.query(Door)} == versions
        assert cloud.card(uid).state == "inventory"


def test_self_activation_right_and_wrong_code_and_rate_limit(world: CloudWorld) -> None:
    chloe = world.seed.people["Chloe Martin"]
    uid, code = world.seed.cards["card-3"]
    with world.service() as cloud:
        for _ in range(5):
            with pytest.raises(InvalidInputError, match="not right"):
                cloud.self_activate(chloe, uid, "WRONG")
        with pytest.raises(RateLimitedError):
            cloud.self_activate(chloe, uid, code)
    world.now += SELF_ACTIVATION_WINDOW_S  # the window passes
    with world.service() as cloud:
        changes = cloud.self_activate(chloe, uid, code)
    assert len(changes) == 3  # Lofts entrance + Elm Court gate + bike room


def test_lost_card_lists_doors_still_accepting_it(world: CloudWorld) -> None:
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    (uid, _), (new_uid, _) = world.seed.cards["card-4"], world.seed.cards["card-5"]
    with world.service() as cloud:
        cloud.activate_on_behalf(maya, ana, uid)
    for name in ("Tower lobby", "Tower basement", "Tower gym"):
        world.sync_door(world.seed.doors[name])
    with world.service() as cloud:
        _, accepting = cloud.report_lost(ana, uid, replacement=new_uid, manager_id=maya)
    assert len(accepting) == 3
    world.sync_door(world.seed.doors["Tower basement"])
    with world.service() as cloud:
        assert world.seed.doors["Tower basement"] not in cloud.doors_accepting(uid)
        assert len(cloud.doors_accepting(uid)) == 2


def test_first_use_rule(world: CloudWorld) -> None:
    ben, maya = world.seed.people["Ben Okafor"], world.seed.managers["Maya Chen"]
    uid, _ = world.seed.cards["card-6"]
    key = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    with world.service() as cloud:
        with pytest.raises(Exception, match="activate your keycard"):
            cloud.login_phone(ben, key)
        cloud.activate_on_behalf(maya, ben, uid)
        credential = cloud.login_phone(ben, key)
        cloud.person(ben).used_app = True
        status = cloud.person_status(ben)
    assert len(credential.scope_ids) == 3
    assert status.app_logged_in and set(status.manual_sync_doors) == {
        world.seed.doors["Tower basement"],
        world.seed.doors["Tower gym"],
    }
