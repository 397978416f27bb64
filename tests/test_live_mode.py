"""Live mode end to end: a small scenario on real components, every fault kind injected.

One run (module-scoped: about 20 s of wall time) of a two-minute scenario at speed 6 on
the embedded broker (the scenario stops the broker, so live mode never uses a shared
Mosquitto for it): three doors (two online, one BLE-only basement), three residents, a
manager's activation, deactivation and lost card, and one fault of every kind. The
openings are :func:`simulators.traffic.openings` of the scenario, so the tests know
which decision comes when and assert the ones the story fixes:

* the basement's clock is set back ten minutes at 8 s, so at 13 s it refuses the mobile
  credential Ana's phone has just obtained (CREDENTIAL_EXPIRED: not valid yet by its
  clock); the phone hands over the bundle with Ben's deactivation anyway, and the lock,
  armed to lose power during its next update, dies committing it;
* it boots at 24 s holding the old list, so Ben's card still opens it at 50 s; at 54 s
  Ana's phone delivers the update again and the cloud's TIME_SYNC corrects the clock;
* Chloe's card, activated at 20 s, opens the main entrance at 49 s; Ben's card,
  deactivated at 10 s, is refused (REVOKED) at the online garage at 62 s;
* nothing is lost: every update reached its lock or is shown pending, every audit event
  reached the cloud or is still held by its lock.
"""

from __future__ import annotations

from typing import Final

import pytest

from infra.broker import is_reachable, parse_mqtt_url
from simulators.fast.scenario_run import run_scenario as run_fast
from simulators.live import run_live, run_scenario
from simulators.live._events import needs_own_broker
from simulators.outcome import KEY_FIGURES, Decision, FaultRecord, RunOutcome, disagreements
from simulators.scenario import Scenario, parse_scenario
from simulators.traffic import openings
from tests.conftest import preferred_mqtt_url

SPEED: Final = 6.0
SCENARIO: Final = """
[scenario]
name = "Live mode test"
duration = "2m"
seed = 6

[[portfolios]]
name = "Harbor Properties"

[[buildings]]
name = "Harbor Tower"

[[buildings.doors]]
name = "Main entrance"
online = true

[[buildings.doors]]
name = "Garage"
online = true

[[buildings.doors]]
name = "Basement"

[[managers]]
name = "Maya Chen"
portfolios = ["Harbor Properties"]

[[people]]
name = "Ana Ruiz"
cards = ["card-1"]
access = [{ building = "Harbor Tower" }]

[[people]]
name = "Ben Okafor"
cards = ["card-6"]
phone = false
access = [{ building = "Harbor Tower" }]

[[people]]
name = "Chloe Martin"
cards = ["card-3"]
cards_active = false
access = [{ building = "Harbor Tower", doors = ["Main entrance", "Basement"] }]

[traffic]
openings_per_person_per_day = 1000
phone_share = 0.6

[[events]]
at = "5s"
kind = "power_cut"
building = "Harbor Tower"
door = "Basement"
during_update = true
duration = "10s"

[[events]]
at = "8s"
kind = "clock_drift"
building = "Harbor Tower"
door = "Basement"
step = "-10m"

[[events]]
at = "10s"
kind = "deactivate"
person = "Ben Okafor"
by = "Maya Chen"

[[events]]
at = "20s"
kind = "activate"
person = "Chloe Martin"
by = "Maya Chen"

[[events]]
at = "60s"
kind = "broker_outage"
duration = "15s"

[[events]]
at = "65s"
kind = "lost_card"
person = "Ana Ruiz"
by = "Maya Chen"

[[events]]
at = "85s"
kind = "power_cut"
building = "Harbor Tower"
door = "Garage"
duration = "10s"

[[events]]
at = "86s"
kind = "phone_offline"
person = "Ana Ruiz"
duration = "20s"

[[events]]
at = "100s"
kind = "cloud_restart"
duration = "4s"

[[events]]
at = "112s"
kind = "ble_link_loss"
building = "Harbor Tower"
door = "Basement"
duration = "6s"
"""


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return parse_scenario(SCENARIO, source="test_live_mode")


@pytest.fixture(scope="module")
def outcome(scenario: Scenario) -> RunOutcome:
    return run_scenario(scenario, speed=SPEED)


def decision(outcome: RunOutcome, person: str, door: str, near_s: float) -> Decision:
    """The decision on ``person`` at ``door`` for the opening at about ``near_s``."""
    (found,) = [
        d
        for d in outcome.decisions
        if d.person == person and d.door == door and abs(d.at_s - near_s) < 1.0
    ]
    return found


def fault(outcome: RunOutcome, kind: str, target: str) -> FaultRecord:
    (found,) = [f for f in outcome.faults if f.kind == kind and f.target == target]
    return found


def test_every_opening_is_decided_once_in_scenario_order(
    scenario: Scenario, outcome: RunOutcome
) -> None:
    planned = [(o.at_s, o.person, o.door, o.via) for o in openings(scenario)]
    decided = [(d.at_s, d.person, d.door, d.via) for d in outcome.decisions]
    assert decided == planned
    assert outcome.figures["missed_openings"] == 0
    assert outcome.figures["errors"] == 0
    assert outcome.mode == "live" and outcome.seed == 6 and outcome.duration_s == 120
    assert needs_own_broker(scenario)  # so it ran on an embedded broker, whatever the URL


def test_nothing_is_lost_and_every_key_figure_is_there(outcome: RunOutcome) -> None:
    assert set(KEY_FIGURES) <= outcome.figures.keys()
    assert outcome.figures["lost_updates"] == 0
    assert outcome.figures["lost_audit_events"] == 0
    assert outcome.ok
    assert outcome.figures["changes"] == 3
    assert outcome.figures["access_events"] == len(outcome.decisions)
    assert outcome.figures["denied_events"] == sum(not d.granted for d in outcome.decisions)
    made, stored = outcome.series.audit_completeness[-1][1:]
    assert 0 < stored <= made


def test_an_activated_card_opens_the_door(outcome: RunOutcome) -> None:
    assert decision(outcome, "Chloe Martin", "Main entrance", 48.7).reason == "GRANTED"


def test_a_deactivated_card_is_refused_once_the_door_synced(outcome: RunOutcome) -> None:
    refused = decision(outcome, "Ben Okafor", "Garage", 62.5)
    assert (refused.granted, refused.reason) == (False, "REVOKED")
    online_sync = outcome.figures["time_to_sync_s_p50_online"]
    assert isinstance(online_sync, float) and online_sync < 40  # before the tap at 62.5 s


def test_an_offline_door_accepts_the_card_until_the_revocation_is_committed(
    outcome: RunOutcome,
) -> None:
    assert decision(outcome, "Ben Okafor", "Basement", 50.4).reason == "GRANTED"
    latency = outcome.figures["revocation_latency_s_p99"]
    assert isinstance(latency, float) and latency > 40  # committed at 54 s, not at 13 s


def test_a_lock_clock_set_back_refuses_a_fresh_mobile_credential(outcome: RunOutcome) -> None:
    refused = decision(outcome, "Ana Ruiz", "Basement", 13.0)
    assert (refused.granted, refused.reason) == (False, "CREDENTIAL_EXPIRED")
    assert decision(outcome, "Ana Ruiz", "Basement", 53.8).reason == "GRANTED"


def test_power_cut_during_an_update_keeps_the_old_list_then_the_update_comes_again(
    outcome: RunOutcome,
) -> None:
    effect = fault(outcome, "power_cut", "Harbor Tower/Basement").effect
    assert effect.startswith("power lost at 1")  # during Ana's visit at 13 s
    assert "while committing v2 (bundle received, commit torn, no receipt sent)" in effect
    assert "booted after 10.0 s holding v1 (the old list, no mix)" in effect
    assert effect.endswith("v2 delivered again and now held")


def test_power_cut_reboots_the_lock_from_flash(outcome: RunOutcome) -> None:
    effect = fault(outcome, "power_cut", "Harbor Tower/Garage").effect
    assert effect.startswith("no power for 10.0 s holding v3; booted from flash holding v3")


def test_broker_outage_holds_updates_until_the_restart(outcome: RunOutcome) -> None:
    effect = fault(outcome, "broker_outage", "broker").effect
    assert "2 door updates made meanwhile, 2 receipted after the restart" in effect
    assert effect.endswith("0 lost")
    during = [n for at, n in outcome.series.pending_doors if 65 <= at < 75]
    assert during and max(during) == 3  # the lost card at 65 s: all three doors behind
    assert outcome.series.pending_doors[-1][1] == 1  # then only the basement


def test_an_offline_phone_queues_its_uploads_and_drains_them_after(
    outcome: RunOutcome,
) -> None:
    effect = fault(outcome, "phone_offline", "Ana Ruiz").effect
    assert "uploads held in the phone's queue" in effect
    assert effect.endswith("(0 left)")
    assert " 0 uploads held" not in effect


def test_a_stepped_lock_clock_is_corrected_by_time_sync(outcome: RunOutcome) -> None:
    effect = fault(outcome, "clock_drift", "Harbor Tower/Basement").effect
    assert "stepped -600 s; corrected by a cloud-signed TIME_SYNC" in effect
    error = int(effect.rsplit("off by ", 1)[1].split(" s")[0].replace(",", ""))
    assert abs(error) <= 10  # scenario seconds: the visit's own latency, times the speed


def test_cloud_restart_and_ble_link_loss_are_recorded(outcome: RunOutcome) -> None:
    assert "started again on the same port" in fault(outcome, "cloud_restart", "cloud").effect
    effect = fault(outcome, "ble_link_loss", "Harbor Tower/Basement").effect
    assert effect.startswith("1 phone links dropped after the unlock")
    # Chloe's activation (20 s) and Ana's lost card (65 s) wait for a phone that fetched
    # after them: Ana's fetched at 13 s and keeps its bundles for 15 minutes.
    assert effect.endswith("the door holds v2 at the end, still pending")
    assert outcome.figures["pending_door_updates"] == 2


SELF_SERVICE: Final = """
[scenario]
name = "Live mode on the preferred broker"
duration = "40s"
seed = 10

[[portfolios]]
name = "Elm Street Partners"

[[portfolios]]
name = "Hillside Homes"

[[buildings]]
name = "Elm Court"
portfolio = "Elm Street Partners"

[[buildings.doors]]
name = "Gate"
online = true

[[buildings.doors]]
name = "Bike room"

[[buildings]]
name = "Hill House"
portfolio = "Hillside Homes"

[[buildings.doors]]
name = "Door"
online = true

[[managers]]
name = "Maya Chen"
portfolios = ["Elm Street Partners"]

[[people]]
name = "Resident"
count = 6
phone = false
access = [{ building = "Elm Court", doors = ["Gate"] }]

[[people]]
name = "Omar Haddad"
access = [{ building = "Elm Court" }, { building = "Hill House" }]

[traffic]
openings_per_person_per_day = 1000

[[events]]
at = "5s"
kind = "deactivate"
person = "Omar Haddad"
by = "Maya Chen"

[[events]]
at = "10s"
kind = "deactivate"
person = "Resident 1"
"""


async def test_self_deactivation_on_the_preferred_broker() -> None:
    """Mosquitto when it is reachable (else the embedded broker): the manager may not
    deactivate Omar, who also lives in another portfolio; a resident deactivates her own
    card at 10 s; she opens the gate at 7 s and is refused there at 33 s."""
    url = preferred_mqtt_url()
    reachable = await is_reachable(*parse_mqtt_url(url))
    scenario = parse_scenario(SELF_SERVICE, source="test_live_mode")
    assert not needs_own_broker(scenario)
    outcome = await run_live(scenario, speed=10.0, mqtt_url=url if reachable else None)
    mine = [(round(d.at_s), d.reason) for d in outcome.decisions if d.person == "Resident 1"]
    assert mine == [(7, "GRANTED"), (33, "REVOKED")]
    assert outcome.ok and outcome.figures["changes"] == 1
    assert outcome.figures["refused_changes"] == 1
    (refusal,) = outcome.faults
    assert (refusal.kind, refusal.target) == ("deactivate", "Omar Haddad")
    assert "refused: 403 Outside your portfolio" in refusal.effect
    assert outcome.figures["door_updates"] == 1  # the gate: the card never held elsewhere
    assert disagreements(outcome, fast_outcome(scenario)) == []


def fast_outcome(scenario: Scenario) -> RunOutcome:
    """The same scenario in fast mode."""
    return run_fast(scenario)


def test_live_and_fast_mode_decide_alike(scenario: Scenario, outcome: RunOutcome) -> None:
    """Every opening of the scenario, replayed in both modes, gets the same decision."""
    assert disagreements(outcome, fast_outcome(scenario)) == []
