"""docs/layout.md is a map: every module of the operator, the sidecar and the harness is named
in it, by its path inside its package, with a line on what it does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYOUT = (REPO / "docs" / "layout.md").read_text()
PACKAGES = {
    "operator": REPO / "operator" / "lameduck_operator",
    "sidecar": REPO / "sidecar" / "lameduck_sidecar",
    "harness": REPO / "harness",
}
# A module is named as `path` at the start of a list item: "- `logic/decision.py`: what it does".
NAMED = set(re.findall(r"^\s*- `([\w/]+\.py)`:\s*\S", LAYOUT, re.M))


def modules(package: Path, prefix: str) -> set[str]:
    return {prefix + str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py"}


@pytest.mark.parametrize("side", PACKAGES)
def test_every_module_is_on_the_map(side: str) -> None:
    prefix = "harness/" if side == "harness" else ""
    missing = sorted(modules(PACKAGES[side], prefix) - NAMED)
    assert not missing, f"name these in docs/layout.md with a line on what each does: {missing}"


def test_the_map_names_no_module_that_is_gone() -> None:
    existing = set().union(*(modules(p, "harness/" if s == "harness" else "") for s, p in PACKAGES.items()))
    assert NAMED - existing == set(), "docs/layout.md names modules that no longer exist"
