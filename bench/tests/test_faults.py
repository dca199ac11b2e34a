"""bench/faults.py's reading of a template: the propagationDelay the sidecar is given, compared
by value, since the operator writes the policy's duration in its own spelling."""

from __future__ import annotations

from typing import Any

import pytest

from bench.faults import carries, seconds


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
