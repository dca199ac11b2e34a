"""Shared fixtures, and the Hypothesis profiles of the property tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from harness.certificates import self_signed
from lameduck_operator.metrics import OperatorMetrics
from tests.unit.repo_data import REPO, load_yaml

# "ci", the default: the same examples on every run (derived from each test's name), no example
# database read or written, so a run never depends on an earlier one. No deadline: a slow, shared
# machine must not fail a property for its speed; every property is bounded by max_examples.
# "explore" (HYPOTHESIS_PROFILE=explore): new random examples each run, ten times as many, for
# looking for bugs locally; a failure prints the example and a blob to reproduce it.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=200)
settings.register_profile("explore", deadline=None, max_examples=2000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
