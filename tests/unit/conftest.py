"""Shared fixtures."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.repo_data import REPO, load_yaml


@pytest.fixture(scope="session")
def crds_by_kind() -> dict[str, dict[str, Any]]:
    crds = [load_yaml(p) for p in sorted((REPO / "crds").glob("*.yaml"))]
    return {c["spec"]["names"]["kind"]: c for c in crds}
