"""The architecture rules of DESIGN.md and STYLE.md, checked on the source.

* ``protocol/`` is sans-IO: it imports no networking, async, clock or
  randomness module.
* Dependencies point one way: ``protocol`` and ``infra`` (transport plumbing:
  broker picker, virtual radio) import none of our other packages;
  ``controller``, ``phone_bridge`` and ``cloud`` never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_PROTOCOL = {
    "asyncio",
    "socket",
    "time",
    "random",
    "secrets",
    "os",
    "threading",
    "select",
    "bleak",
    "bumble",
    "aiomqtt",
    "amqtt",
    "sqlite3",
    "datetime",
}
OURS = {
    "protocol",
    "infra",
    "controller",
    "phone_bridge",
    "cloud",
    "conformance",
    "simulators",
    "bench",
}
ALLOWED = {
    "protocol": set(),
    "infra": set(),
    "controller": {"protocol", "infra"},
    "phone_bridge": {"protocol", "infra"},
    "cloud": {"protocol", "infra"},
    "conformance": {"protocol", "infra", "controller", "phone_bridge"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_protocol_is_sans_io() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_roots(p) & FORBIDDEN_IN_PROTOCOL)
        for p in (ROOT / "protocol").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_one_way(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        ours = imported_roots(path) & OURS - {package}
        assert ours <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {sorted(ours)}"


def test_forbidden_check_is_effective(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom asyncio import sleep\nfrom .x import y\n")
    assert imported_roots(sample) == {"time", "asyncio"}
