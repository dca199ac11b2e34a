"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.certificates import self_signed
from lameduck_operator.metrics import OperatorMetrics
from tests.unit.repo_data import REPO, load_yaml


@pytest.fixture(scope="session")
def crds_by_kind() -> dict[str, dict[str, Any]]:
    crds = [load_yaml(p) for p in sorted((REPO / "crds").glob("*.yaml"))]
    return {c["spec"]["names"]["kind"]: c for c in crds}


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1: the webhook's server in the tests."""
    return self_signed(tmp_path_factory.mktemp("tls"), "127.0.0.1", "IP:127.0.0.1")


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()
