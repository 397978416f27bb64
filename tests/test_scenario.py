"""Scenario files (issue #6, "Scenarios"): the examples load, bad files are refused at the
right line with a reason a user can act on, and no input raises anything but ScenarioError.

Theory of operation: each invalid case is a whole small scenario with ``# <-`` on the line
the error must name, so the expected line number is read from the text, not counted by
hand. Property tests feed random text, mutated example files and random values in
valid positions to the parser; a generated-world property renders a random valid world
to TOML with a tiny writer and checks that parsing gives back what was written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators._scenario_lines import index_lines
from simulators.scenario import (
    Activate,
    BleLinkLoss,
    BrokerOutage,
    ClockDrift,
    CloudRestart,
    LostCard,
    PhoneOffline,
    PowerCut,
    Scenario,
    ScenarioError,
    ScenarioLimits,
    check_main,
    format_duration,
    load_scenario,
    parse_duration,
    parse_scenario,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "simulators" / "scenarios"
EXAMPLES = sorted(SCENARIOS.glob("*.toml"))
PROPERTY = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# --- the examples ---------------------------------------------------------------------------


def test_there_is_an_example_per_feature() -> None:
    names = {path.stem for path in EXAMPLES}
    kinds = {"activate", "deactivate", "lost_card", "broker_outage", "phone_offline"}
    kinds |= {"power_cut", "clock_drift", "cloud_restart", "ble_link_loss"}
    assert {"small_building", "portfolio", "traffic", "large_fast"} <= names
    assert {f"event_{kind}" for kind in kinds} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_loads(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.door_count > 0 and scenario.people
    assert [event.at_s for event in scenario.events] == sorted(e.at_s for e in scenario.events)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_key_of_an_example_has_its_own_line(path: Path) -> None:
    """The line index finds every table and key, on the line that names it."""
    text = path.read_text()
    index = index_lines(text)
    lines = text.splitlines()
    for key_path in _paths(tomllib.loads(text)):
        assert key_path in index.lines, key_path
        last = key_path[-1]
        if isinstance(last, str):
            assert last in lines[index.lines[key_path] - 1], key_path


TRICKY = """\
# a comment with [[people]] and name = "x"
scenario.name = "t"            # dotted keys make tables
"scenario"."duration" = '1d'
notes = \"\"\"
[[buildings]]
name = "not a header: inside a string"
\"\"\"
raw = '''it's [not] = a key'''
[[ buildings ]]
name = "A"
  [[ buildings . doors ]]
  name = "d1"
  [[buildings.doors]]
  "name" = "d2"
  [buildings.extra]
  list = [
    "x",  # a comment, then a blank line

    { k = 1 },
  ]
[[buildings]]
name = "B"
"""


def test_the_line_index_reads_tricky_toml() -> None:
    tomllib.loads(TRICKY)
    lines = index_lines(TRICKY).lines
    assert lines[("scenario", "name")] == 2 and lines[("scenario", "duration")] == 3
    assert lines[("buildings", 0)] == 9 and lines[("buildings", 0, "name")] == 10
    assert lines[("buildings", 0, "doors", 1, "name")] == 14
    assert lines[("buildings", 0, "extra", "list", 1, "k")] == 19
    assert lines[("buildings", 1, "name")] == 22
    assert ("raw",) in lines and len([p for p in lines if p[:1] == ("buildings",)]) == 15


def _paths(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def test_small_building_expands_groups_and_defaults() -> None:
    scenario = load_scenario(SCENARIOS / "small_building.toml")
    tower = scenario.building("Harbor Tower")
    assert [door.name for door in tower.doors][-3:] == ["Apartment 1", "Apartment 2", "Apartment 3"]
    assert (tower.online_doors, tower.offline_doors) == (1, 4)
    assert tower.doors[1].ble_range_m == 4.0 and tower.doors[2].ble_range_m == 10.0
    people = {person.name: person for person in scenario.people}
    assert people["Ana Ruiz"].cards == ("card-1",)
    assert people["Ben Okafor"].cards == ("Ben Okafor card",) and not people["Ben Okafor"].phone
    assert people["Chloe Martin"].access[0].doors == tuple(door.name for door in tower.doors)
    assert scenario.portfolios[0].name == tower.portfolio
    assert scenario.start == dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    assert (scenario.duration_s, scenario.seed) == (86_400.0, 7)


def test_traffic_profile_and_one_door_each() -> None:
    scenario = load_scenario(SCENARIOS / "traffic.toml")
    traffic = scenario.traffic
    assert math.isclose(sum(traffic.hour_shares()), 1.0)
    assert traffic.hour_shares()[18] > traffic.hour_shares()[2]
    assert (traffic.phone_share, traffic.card_share) == (0.3, 0.7)
    people = {person.name: person for person in scenario.people}
    assert people["Resident 1"].access[0].doors == ("Main entrance", "Garage", "Apartment 1")
    assert people["Resident 41"].access[0].doors[-1] == "Apartment 1"
    assert people["Resident 60"].access[0].doors[-1] == "Apartment 20"


def test_events_are_typed_and_in_time_order() -> None:
    scenario = load_scenario(SCENARIOS / "large_fast.toml")
    kinds = {type(event) for event in scenario.events}
    assert {LostCard, BrokerOutage, PhoneOffline, PowerCut, ClockDrift, Activate} <= kinds
    assert isinstance(scenario.events[0], ClockDrift) and scenario.events[0].at_s == 0
    cut = next(event for event in scenario.events if isinstance(event, PowerCut))
    assert (cut.door, cut.during_update, cut.duration_s) == ("Ridge basement", True, 600.0)
    activate = next(event for event in scenario.events if isinstance(event, Activate))
    assert activate.by is None and activate.card == "card-3"
    assert scenario.door_count >= 3_000 and scenario.duration_s == 7 * 86_400


def test_cloud_restart_and_ble_link_loss_are_typed() -> None:
    restart = load_scenario(SCENARIOS / "event_cloud_restart.toml").events[1]
    assert restart == CloudRestart(at_s=7 * 3_600, duration_s=60.0)
    loss = load_scenario(SCENARIOS / "event_ble_link_loss.toml").events[1]
    assert loss == BleLinkLoss(
        at_s=9 * 3_600, building="Harbor Tower", door="Tower basement", duration_s=14_400.0
    )
    default = parse_scenario(HEAD + '[[events]]\nat = "1h"\nkind = "cloud_restart"\n')
    assert default.events == (CloudRestart(at_s=3_600.0, duration_s=30.0),)


def test_a_card_whose_first_event_activates_it_starts_inactive() -> None:
    scenario = load_scenario(SCENARIOS / "event_activate.toml")
    ana, ben = scenario.people
    assert scenario.starts_active(ana, "card-1") and not scenario.starts_active(ana, "card-2")
    assert not scenario.starts_active(ben, "card-6")
    deactivated = load_scenario(SCENARIOS / "event_deactivate.toml")
    assert deactivated.starts_active(deactivated.people[1], "card-6")


def test_check_main_reports_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\nduration = "1d"\nsed = 3\n')
    assert check_main([str(SCENARIOS / "small_building.toml")]) == 0
    assert check_main([str(SCENARIOS / "small_building.toml"), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert (
        out.splitlines()
        == [f"{SCENARIOS / 'small_building.toml'}: ok (5 doors, 3 people, 0 events)"] * 2
    )
    assert err.startswith(f'{bad}:4: unknown key "sed" in [scenario]; did you mean "seed"?')
    assert check_main([str(tmp_path / "missing.toml")]) == 1
    assert "missing.toml: cannot read the file" in capsys.readouterr().err
    assert check_main([]) == 1


def test_a_file_that_is_not_utf8_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[scenario]\nname = "Caf\xe9"\n')
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert (caught.value.line, caught.value.reason) == (2, "the file is not UTF-8 text")


# --- invalid scenarios ----------------------------------------------------------------------

HEAD = """\
[scenario]
name = "t"
duration = "1d"

[[buildings]]
name = "Tower"

[[buildings.doors]]
name = "Entrance"
online = true

[[buildings.doors]]
name = "Apartment"
count = 3

[[people]]
name = "Ana"
cards = ["card-1"]
access = [{ building = "Tower" }]
"""

INVALID: list[tuple[str, str, str]] = [
    # (case id, scenario text with "# <-" on the line the error must name, part of reason)
    ("unknown key", HEAD + '[[people]]\nnmae = "Ben"  # <-\n', 'did you mean "name"?'),
    ("unknown table", HEAD + "[trafic]  # <-\n", 'unknown key "trafic"'),
    (
        "key of another event kind",
        HEAD + '[[events]]\nat = "1h"\nkind = "activate"\nperson = "Ana"\nduration = "1h"  # <-\n',
        'unknown key "duration" in an event of kind "activate"',
    ),
    (
        "dangling building",
        HEAD + '[[people]]\nname = "Ben"\naccess = [{ building = "Towr" }]  # <-\n',
        'building "Towr" is not defined (buildings: "Tower")',
    ),
    (
        "dangling door in a long array",
        HEAD
        + '[[people]]\nname = "Ben"\naccess = [\n  { building = "Tower", doors = [\n'
        + '    "Entrance",\n    "Apartment 4",  # <-\n  ] },\n]\n',
        'building "Tower" has no door or door group "Apartment 4"',
    ),
    (
        "dangling person",
        HEAD + '[[events]]\nat = "1h"\nkind = "deactivate"\nperson = "Bob"  # <-\n',
        'person "Bob" is not defined (people: "Ana")',
    ),
    (
        "dangling card",
        HEAD + '[[events]]\nat = "1h"\nkind = "lost_card"\nperson = "Ana"\ncard = "card-9"  # <-\n',
        '"Ana" has no card "card-9" (cards: "card-1")',
    ),
    (
        "dangling manager",
        HEAD + '[[events]]\nat = "1h"\nkind = "activate"\nperson = "Ana"\nby = "Maya"  # <-\n',
        'manager "Maya" is not defined',
    ),
    (
        "dangling portfolio",
        HEAD + '[[managers]]\nname = "Maya"\nportfolios = ["Harbor"]  # <-\n',
        'portfolio "Harbor" is not defined',
    ),
    (
        "a group where one door is meant",
        HEAD
        + '[[events]]\nat = 0\nkind = "power_cut"\nbuilding = "Tower"\ndoor = "Apartment"  # <-\n',
        'is a group of 3 doors; name one, e.g. "Apartment 1"',
    ),
    (
        "phone offline without a phone",
        HEAD.replace('cards = ["card-1"]', "phone = false")
        + '[[events]]\nat = 0\nkind = "phone_offline"\nperson = "Ana"  # <-\nduration = "1h"\n',
        '"Ana" has no phone',
    ),
    (
        "share above 1",
        HEAD + "[traffic]\nphone_share = 1.5  # <-\n",
        '"phone_share" must be a number in [0, 1], got 1.5',
    ),
    (
        "profile of 23",
        HEAD + "[traffic]\nprofile = [  # <-\n" + "1, " * 23 + "\n]\n",
        "an array of 24 weights, one per hour of the day; it has 23",
    ),
    (
        "profile of zeros",
        HEAD + "[traffic]\nprofile = [" + "0, " * 24 + "]  # <-\n",
        "at least one weight above 0",
    ),
    (
        "negative weight",
        HEAD + "[traffic]\nprofile = [\n" + "1,\n" * 5 + "-1,  # <-\n" + "1,\n" * 18 + "]\n",
        '"profile" element 6 must be a number in [0, 1e+09], got -1',
    ),
    (
        "event after the end",
        HEAD + '[[events]]\nat = "1d1h"  # <-\nkind = "broker_outage"\nduration = "1h"\n',
        "is not before the end of the scenario (1d)",
    ),
    (
        "outage past the end",
        HEAD + '[[events]]\nat = "23h"\nkind = "broker_outage"\nduration = "2h"  # <-\n',
        "it lasts from 23h to 1d1h, past the end of the scenario (1d)",
    ),
    (
        "negative time",
        HEAD + '[[events]]\nat = "-1h"  # <-\nkind = "broker_outage"\nduration = "1h"\n',
        '"at" must not be negative',
    ),
    (
        "duplicate person",
        HEAD + '[[people]]\nname = "Ana"  # <-\n',
        'person "Ana" is defined twice',
    ),
    (
        "duplicate person from a group",
        HEAD.replace('name = "Ana"', 'name = "Ana 2"')
        + '[[people]]\nname = "Ana"  # <-\ncount = 2\n',
        'person "Ana 2" is defined twice',
    ),
    (
        "duplicate door",
        HEAD + '[[buildings.doors]]\nname = "Entrance"  # <-\n',
        'a door or door group "Entrance" is already in this building',
    ),
    (
        "duplicate card",
        HEAD + '[[people]]\nname = "Ben"\ncards = ["card-2", "card-1"]  # <-\n',
        'card "card-1" already belongs to "Ana"',
    ),
    (
        "duplicate building",
        HEAD + '[[buildings]]\nname = "Tower"  # <-\n[[buildings.doors]]\nname = "X"\n',
        'building "Tower" is defined twice',
    ),
    (
        "wrong type",
        HEAD + '[[buildings.doors]]\nname = "Lift"\ncount = "five"  # <-\n',
        "\"count\" must be an integer in [1, 100000], got 'five' (a string)",
    ),
    (
        "boolean as a string",
        HEAD + '[[buildings.doors]]\nname = "Lift"\nonline = "yes"  # <-\n',
        '"online" must be true or false',
    ),
    ("bad duration", HEAD.replace('"1d"', '"two days"  # <-'), "units d, h, m, s, ms"),
    ("zero duration", HEAD.replace('"1d"', "0  # <-"), '"duration" must be a positive duration'),
    (
        "missing duration",
        HEAD.replace('duration = "1d"', "").replace("[scenario]", "[scenario]  # <-"),
        '[scenario] needs "duration"',
    ),
    (
        "start without offset",
        HEAD.replace('"1d"', '"1d"\nstart = 2026-01-01T00:00:00  # <-'),
        "with an offset, e.g. 2026-01-05T00:00:00Z, got a date-time without an offset",
    ),
    (
        "unknown event kind",
        HEAD + '[[events]]\nat = 0\nkind = "fire"  # <-\n',
        'unknown event kind "fire"',
    ),
    (
        "clock drift of nothing",
        HEAD
        + '[[events]]\nat = 0\nkind = "clock_drift"  # <-\nbuilding = "Tower"\ndoor = "Entrance"\n',
        'needs "ppm" (a rate) or "step" (a jump)',
    ),
    (
        "ble link loss without a duration",
        HEAD
        + '[[events]]  # <-\nat = 0\nkind = "ble_link_loss"\nbuilding = "Tower"\n'
        + 'door = "Entrance"\n',
        'an event of kind "ble_link_loss" needs "duration"',
    ),
    (
        "ble link loss at a door group",
        HEAD
        + '[[events]]\nat = 0\nkind = "ble_link_loss"\nbuilding = "Tower"\n'
        + 'door = "Apartment"  # <-\nduration = "1h"\n',
        'is a group of 3 doors; name one, e.g. "Apartment 1"',
    ),
    (
        "cloud restart past the end",
        HEAD + '[[events]]\nat = "23h"\nkind = "cloud_restart"\nduration = "2h"  # <-\n',
        "past the end of the scenario",
    ),
    (
        "cloud restart of another kind's key",
        HEAD + '[[events]]\nat = 0\nkind = "cloud_restart"\nperson = "Ana"  # <-\n',
        'unknown key "person" in an event of kind "cloud_restart"',
    ),
    ("syntax error", HEAD + 'seed = "unterminated  # <-\n', "invalid TOML"),
    ("duplicate key", HEAD + '[[people]]\nname = "Ben"\nname = "Bob"  # <-\n', "invalid TOML"),
    (
        "no buildings",  # nothing to point at: the first line
        '[scenario]  # <-\nname = "t"\nduration = 60\n',
        "at least one [[buildings]]",
    ),
    ("no scenario table", '# <-\n[[buildings]]\nname = "t"\n', "needs a [scenario] table"),
]


def _marked_line(text: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if "# <-" in line)


@pytest.mark.parametrize(("text", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_an_invalid_scenario_is_refused_at_its_line(text: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, source="bad.toml")
    error = caught.value
    assert reason in error.reason
    assert error.line == _marked_line(text), str(error)
    assert str(error) == f"bad.toml:{error.line}: {error.reason}"


def test_the_head_of_the_invalid_cases_is_valid() -> None:
    scenario = parse_scenario(HEAD)
    assert (scenario.door_count, len(scenario.people)) == (4, 1)


def test_sizes_are_capped() -> None:
    with pytest.raises(ScenarioError, match=r"<string>:14: the scenario would have 4 doors"):
        parse_scenario(HEAD, limits=ScenarioLimits(max_doors=3))
    with pytest.raises(
        ScenarioError, match=r"<string>:1: the file is 249 bytes; at most 10 are allowed"
    ):
        parse_scenario(HEAD, limits=ScenarioLimits(max_file_bytes=10))
    with pytest.raises(ScenarioError, match=r"at most 1 \[\[people\]\] entries"):
        parse_scenario(HEAD + '[[people]]\nname = "B"\n', limits=ScenarioLimits(max_people=1))


def test_the_largest_allowed_building_loads_quickly() -> None:
    text = HEAD.replace("count = 3", "count = 99999")
    assert parse_scenario(text).door_count == 100_000
    with pytest.raises(ScenarioError, match="100,001 doors"):
        parse_scenario(HEAD.replace("count = 3", "count = 100000"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400.0), ("1d12h", 129_600.0), ("1.5h", 5400.0), ("-10m", -600.0), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "-", "1", "1x", "h", "1 d 2", "1d-2h"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None


# --- properties -----------------------------------------------------------------------------


def _parse_or_refuse(text: str) -> None:
    try:
        parse_scenario(text, source="fuzz.toml")
    except ScenarioError as error:
        assert error.line is None or 1 <= error.line <= text.count("\n") + 1
        assert str(error).startswith("fuzz.toml:")


@PROPERTY
@given(st.text())
def test_garbage_text_raises_only_scenario_error(text: str) -> None:
    _parse_or_refuse(text)


@PROPERTY
@given(
    st.sampled_from(EXAMPLES[:6]),
    st.integers(min_value=0),
    st.integers(min_value=0, max_value=40),
    st.text(alphabet=st.sampled_from("[]{}=\"'#.,\n 0123456789abcdhms-_"), max_size=20),
)
def test_mutated_examples_raise_only_scenario_error(
    path: Path, where: int, cut: int, insert: str
) -> None:
    text = path.read_text()
    where %= len(text)
    _parse_or_refuse(text[:where] + insert + text[where + cut :])


# A tiny TOML writer: every top-level key as one inline value (enough for the properties).


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # nan, inf and -inf are spelled the same in TOML
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _document(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {_toml(value)}\n" for key, value in data.items())


_SAFE_TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=8
)
_VALUES = st.recursive(
    st.none().map(lambda _: "x") | st.booleans() | st.integers() | st.floats() | _SAFE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_SAFE_TEXT, inner, max_size=3),
    max_leaves=6,
)


def _set(data: Any, path: list[int], value: Any) -> Any:
    """``data`` with the node chosen by ``path`` (indexes mod fan-out) replaced."""
    if not path or not isinstance(data, dict | list) or not data:
        return value
    keys = list(data) if isinstance(data, dict) else list(range(len(data)))
    key = keys[path[0] % len(keys)]
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[key] = _set(data[key], path[1:], value)
    return copy


@PROPERTY
@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=6), _VALUES)
def test_random_values_in_valid_places_raise_only_scenario_error(
    path: list[int], value: Any
) -> None:
    document = tomllib.loads((SCENARIOS / "portfolio.toml").read_text())
    _parse_or_refuse(_document(_set(document, path, value)))


_NAMES = st.text(st.sampled_from("abcdefgh"), min_size=1, max_size=6)


@st.composite
def _worlds(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid scenario document: buildings with door groups, people with access."""
    building_names = draw(st.lists(_NAMES, min_size=1, max_size=4, unique=True))
    buildings: list[dict[str, Any]] = []
    for name in building_names:
        groups = draw(st.lists(_NAMES.map(str.upper), min_size=1, max_size=4, unique=True))
        doors = [
            {"name": group, "count": draw(st.integers(1, 5)), "online": draw(st.booleans())}
            for group in groups
        ]
        buildings.append({"name": name, "doors": doors})
    people = []
    for name in draw(st.lists(_NAMES, max_size=5, unique=True)):
        building = draw(st.sampled_from(buildings))
        group = draw(st.sampled_from(building["doors"]))
        access = [{"building": building["name"], "doors": [group["name"]]}]
        people.append({"name": f"P {name}", "count": draw(st.integers(1, 3)), "access": access})
    duration = draw(st.integers(1, 10**6))
    events = [
        {"at": draw(st.integers(0, duration - 1)), "kind": "deactivate", "person": f"{p['name']}"}
        for p in people
        if p["count"] == 1
    ]
    scenario = {"name": "generated", "duration": duration, "seed": draw(st.integers(0, 2**63 - 1))}
    return {"scenario": scenario, "buildings": buildings, "people": people, "events": events}


@PROPERTY
@given(_worlds())
def test_a_generated_world_parses_to_what_was_written(world: dict[str, Any]) -> None:
    scenario: Scenario = parse_scenario(_document(world))
    doors = sum(group["count"] for b in world["buildings"] for group in b["doors"])
    assert scenario.door_count == doors
    assert len(scenario.people) == sum(person["count"] for person in world["people"])
    assert scenario.seed == world["scenario"]["seed"]
    assert len(scenario.events) == len(world["events"])
    for person, written in zip(scenario.people, _expanded(world["people"]), strict=True):
        building = scenario.building(written["access"][0]["building"])
        group = written["access"][0]["doors"][0]
        assert person.access[0].doors == tuple(d.name for d in building.doors if d.group == group)


def _expanded(people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [person for person in people for _ in range(person["count"])]
