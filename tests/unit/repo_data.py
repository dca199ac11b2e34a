"""The repository's examples and CRDs, read as test data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
EXPECT = re.compile(r"^# expect-error: (?P<path>[^:]+): (?P<message>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class InvalidExample:
    name: str
    body: dict[str, Any]
    path: str
    message: str


def valid_policy_files() -> list[Path]:
    return sorted((EXAMPLES / "policies").glob("*.yaml"))


def invalid_examples() -> list[InvalidExample]:
    found = []
    for file in sorted((EXAMPLES / "invalid").glob("*.yaml")):
        text = file.read_text()
        label = EXPECT.search(text)
        assert label, f"{file.name} has no '# expect-error: <path>: <message>' line"
        found.append(InvalidExample(file.stem, yaml.safe_load(text), label["path"], label["message"]))
    return found


def load_yaml(path: Path) -> dict[str, Any]:
    body = yaml.safe_load(path.read_text())
    assert isinstance(body, dict)
    return body


# Specs both the model and the CRD must reject: (spec, field path, part of the message).
INVALID_SPECS: list[tuple[dict[str, Any], str, str]] = [
    ({"hold": {"maxHold": "0s"}}, "spec.hold.maxHold", "between 1s and 10m"),
    ({"hold": {"maxHold": "11m"}}, "spec.hold.maxHold", "between 1s and 10m"),
    ({"hold": {"propagationDelay": 2}}, "spec.hold.propagationDelay", "must be of type string"),
    ({"hold": {"quietPeriod": "1" * 40 + "s"}}, "spec.hold.quietPeriod", "may not be longer than 32"),
    ({"hold": {"method": "sleep"}}, "spec.hold.method", 'Unsupported value: "sleep"'),
    ({"apply": "Now"}, "spec.apply", 'supported values: "OnNextRollout", "Immediate"'),
    ({"onConflict": "Force"}, "spec.onConflict", 'supported values: "Report", "TakeOver"'),
    ({"priority": 1001}, "spec.priority", "less than or equal to 1000"),
    ({"priority": True}, "spec.priority", "must be of type integer"),
    ({"maxConcurrentRollouts": 1.5}, "spec.maxConcurrentRollouts", "must be of type integer"),
    ({"terminationGracePeriodSeconds": 0}, "spec.terminationGracePeriodSeconds", "greater than or equal to 1"),
    ({"minReadySeconds": -1}, "spec.minReadySeconds", "greater than or equal to 0"),
    ({"readinessGate": {"enabled": "yes"}}, "spec.readinessGate.enabled", "must be of type boolean"),
    ({"readinessGate": True}, "spec.readinessGate", "must be of type object"),
    ({"containers": "app"}, "spec.containers", "must be of type array"),
    ({"containers": ["a"] * 65}, "spec.containers", "must have at most 64 items"),
    ({"containers": ["x" * 64]}, "spec.containers[0]", "may not be longer than 63"),
    ({"selector": {"matchLabels": "tier=web"}}, "spec.selector.matchLabels", "must be of type object"),
    ({"selector": {"matchLabels": {"tier": 1}}}, "spec.selector.matchLabels.tier", "must be of type string"),
    ({"selector": {"matchExpressions": [{"key": "a"}]}}, "spec.selector.matchExpressions[0].operator", "Required"),
    (
        {"selector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
        "spec.selector.matchExpressions",
        "empty for Exists and DoesNotExist",
    ),
    (
        {"selector": {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}},
        "spec.selector.matchExpressions",
        "non-empty for operators In and NotIn",
    ),
    ({"selector": {"matchLabels": {f"k{i}": "v" for i in range(65)}}}, "spec.selector.matchLabels", "at most 64"),
    ({"selector": {"matchLabels": {"tier": "x" * 64}}}, "spec.selector.matchLabels.tier", "longer than 63"),
    ({"selector": {"matchLabels": {"k" * 318: "web"}}}, "spec.selector.matchLabels", "longer than 317"),
    (
        {"selector": {"matchExpressions": [{"key": "k" * 318, "operator": "Exists"}]}},
        "spec.selector.matchExpressions[0].key",
        "longer than 317",
    ),
    (
        {"selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x" * 64]}]}},
        "spec.selector.matchExpressions[0].values[0]",
        "longer than 63",
    ),
    ({"hold": {"lameDuck": {"port": 8080, "path": "/" + "x" * 256}}}, "spec.hold.lameDuck.path", "longer than 256"),
    ({"hold": {"lameDuck": {"port": 8080, "path": "/x\n"}}}, "spec.hold.lameDuck.path", "visible ASCII"),
    ({"containers": ["app\n"]}, "spec.containers[0]", "should match"),
    ({"hold": {"maxHold": "99999999h"}}, "spec.hold.maxHold", ""),
    ({"selector": {"matchLabel": {}}}, "spec.selector.matchLabel", "unknown field"),
    ({"hold": {"maxhold": "3s"}}, "spec.hold.maxhold", "unknown field"),
    ({"hold": {"learnedBudget": {"maxHoldCap": "20s"}}}, "spec.hold.learnedBudget.maxHoldCap", "shorter than maxHold"),
    ({"hold": {"learnedBudget": {}}}, "spec.hold.learnedBudget.maxHoldCap", "Required"),
    (
        {"hold": {"maxHold": "10s"}, "drainTimeout": "1m", "terminationGracePeriodSeconds": 69},
        "spec.terminationGracePeriodSeconds",
        "at least maxHold + drainTimeout",
    ),
]
