"""A fast run's world: the raw inserts of :mod:`simulators.fast.scenario_setup` store the
very rows SQLAlchemy's Core insert stores (defaults and bind processing included), so the
world a scenario builds is the same either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Table, insert
from sqlalchemy.orm import Session

from cloud.models import Base
from simulators.fast import scenario_setup
from simulators.fast.scenario_setup import build_world
from simulators.scenario import load_scenario

SCENARIOS = Path(__file__).parent.parent / "simulators/scenarios"


def _core_insert(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """The reference: one Core ``executemany`` insert."""
    session.connection().execute(insert(cast(Table, model.__table__)), rows)


def _dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table as SQLite stores it (with each value's storage class)."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        found = {}
        for table in Base.metadata.sorted_tables:
            cursor.execute(f"SELECT * FROM {table.name} ORDER BY rowid")
            found[table.name] = [
                tuple((type(v).__name__, v) for v in row) for row in cursor.fetchall()
            ]
        return found
    finally:
        raw.close()


@pytest.mark.parametrize("name", ["portfolio", "event_lost_card", "event_activate"])
def test_raw_inserts_store_what_core_inserts_store(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    clock = lambda _n: lambda: 0.0  # noqa: E731
    fast = _dump(build_world(scenario, clock).engine)
    monkeypatch.setattr(scenario_setup, "_insert", _core_insert)
    assert _dump(build_world(scenario, clock).engine) == fast
    assert fast["access_grant"] and fast["keycard"] and fast["person"] and fast["door"]
