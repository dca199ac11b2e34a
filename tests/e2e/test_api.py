"""The CRDs on a real API server: every valid example accepted, every invalid one rejected
with the documented message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.kube import Kube
from tests.unit.repo_data import EXAMPLES, InvalidExample, invalid_examples, valid_policy_files


def in_namespace(text: str, namespace: str) -> str:
    """The example as it would be applied in the test's namespace."""
    body = yaml.safe_load(text)
    if body["kind"] == "GracefulPolicy":
        body["metadata"]["namespace"] = namespace
    return str(yaml.safe_dump(body))


@pytest.mark.parametrize("path", valid_policy_files(), ids=lambda p: p.stem)
def test_valid_examples_are_accepted(kube: Kube, crds: None, namespace: str, path: Path) -> None:
    result = kube.run("apply", "--dry-run=server", "-f", "-", input=in_namespace(path.read_text(), namespace))
    assert "created (server dry run)" in result.stdout


@pytest.mark.parametrize("example", invalid_examples(), ids=lambda e: e.name)
def test_invalid_examples_are_rejected_with_the_documented_error(
    kube: Kube, crds: None, namespace: str, example: InvalidExample
) -> None:
    result = kube.run(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=(EXAMPLES / "invalid" / f"{example.name}.yaml").read_text(),
        check=False,
    )
    assert result.returncode != 0, f"{example.name} was accepted"
    assert example.path in result.stderr, result.stderr
    assert example.message in result.stderr, result.stderr


def test_policies_show_state_at_a_glance(kube: Kube, crds: None, namespace: str) -> None:
    kube.run("apply", "-f", "-", input=in_namespace((EXAMPLES / "policies" / "web-tier.yaml").read_text(), namespace))
    printed = kube.run("get", "gracefulpolicies", "-n", namespace).stdout.splitlines()[0].split()
    assert printed == ["NAME", "MODE", "MATCHED", "COMPLIANT", "BUDGET", "READY", "AGE"]
    explained = kube.run("explain", "gracefulpolicy.spec.hold.maxHold").stdout
    assert "Upper bound of the hold" in explained
