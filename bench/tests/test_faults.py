"""bench/faults.py's reading of a template: the propagationDelay the sidecar is given, compared
by value, since the operator writes the policy's duration in its own spelling."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bench.faults import carries, restart_problems, seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1500ms", 1.5), ("1.5s", 1.5), ("1m30s", 90.0), ("2h", 7200.0), ("", None), ("1.5", None), (None, None)],
)
def test_durations_are_read_as_the_crd_takes_them(text: str | None, expected: float | None) -> None:
    assert seconds(text) == expected


def template(delay: str | None) -> dict[str, Any]:
    env = [] if delay is None else [{"name": "LAMEDUCK_PROPAGATION_DELAY", "value": delay}]
    sidecar = {"name": "lameduck", "env": env}
    return {"spec": {"template": {"spec": {"initContainers": [sidecar], "containers": [{"name": "app"}]}}}}


def test_a_template_carries_the_change_when_the_values_match_whatever_the_spelling() -> None:
    assert carries(template("1.5s"), "1500ms")
    assert not carries(template("2.5s"), "1500ms")
    assert not carries(template(None), "1500ms")


def test_restart_problems_outage_allows_one_restart_of_the_leader_only() -> None:
    assert restart_problems("apiserver-outage", Counter(), "op-a", 0) == []
    assert restart_problems("apiserver-outage", Counter({"op-a": 1}), "op-a", 0) == []
    assert restart_problems("apiserver-outage", Counter({"op-a": 2}), "op-a", 0) != []
    assert restart_problems("apiserver-outage", Counter({"op-b": 1}), "op-a", 0) != []
    assert restart_problems("apiserver-outage", Counter({"op-a": 1, "op-b": 1}), "op-a", 0) != []


def test_restart_problems_kills_allow_one_restart_per_kill() -> None:
    assert restart_problems("leader-kill", Counter({"op-a": 1, "op-b": 1}), "op-a", 2) == []
    assert restart_problems("leader-kill", Counter({"op-a": 2, "op-b": 1}), "op-a", 2) != []
