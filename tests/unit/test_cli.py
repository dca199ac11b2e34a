"""The lameduck CLI on files: render, diff and check, offline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from lameduck_operator.cli import EXIT_BAD_INPUT, EXIT_INVALID_OBJECTS, EXIT_NOT_COMPLIANT, EXIT_OK, main
from tests.unit.repo_data import EXAMPLES


def run(*args: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), stdin=io.StringIO(stdin), out=out)
    return code, out.getvalue()


def test_render_examples_prints_every_deployment_with_the_intent() -> None:
    code, out = run("render", "-f", str(EXAMPLES / "policies"), "-f", str(EXAMPLES / "deployments"))
    assert code == EXIT_OK
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d}
    assert set(docs) == {"storefront", "checkout", "admin", "search", "gateway"}
    storefront = docs["storefront"]["spec"]["template"]["spec"]
    assert storefront["initContainers"][0]["name"] == "lameduck"
    assert storefront["containers"][0]["lifecycle"]["preStop"]["httpGet"]["path"] == "/hold/app"
    assert "lifecycle" not in storefront["containers"][1], "only the containers the policy names"
    assert storefront["terminationGracePeriodSeconds"] == 65
    gateway = docs["gateway"]
    assert gateway["metadata"]["annotations"]["lameduck.dev/policy"] == "ClusterGracefulPolicy/behind-cloud-lb"
    assert gateway["spec"]["minReadySeconds"] == 15
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300, "never lowered"
    search = docs["search"]["spec"]["template"]["spec"]
    assert search["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 20}}
    checkout = docs["checkout"]["spec"]["template"]["spec"]
    assert checkout["containers"][0]["lifecycle"]["preStop"]["exec"], "conflicts leave the Deployment as it is"
    assert "annotations" not in docs["checkout"]["metadata"]
    assert "# shop/checkout: Conflict (ConflictingFields) under GracefulPolicy shop/web-tier" in out
    assert "# shop/admin: Skipped (OptedOut) under GracefulPolicy shop/web-tier" in out


def test_render_diff_shows_only_changes() -> None:
    code, out = run("render", "--diff", "-f", str(EXAMPLES / "policies"), "-f", str(EXAMPLES / "deployments"))
    assert code == EXIT_OK
    assert "+++ shop/storefront (with lameduck)" in out
    assert "+      terminationGracePeriodSeconds: 65" in out
    assert "+++ shop/checkout" not in out


def test_check_reports_and_exits_non_zero_when_work_remains() -> None:
    code, out = run("check", "-o", "json", "-f", str(EXAMPLES / "policies"), "-f", str(EXAMPLES / "deployments"))
    assert code == EXIT_NOT_COMPLIANT
    rows = {r["name"]: r for r in json.loads(out)}
    assert {n: r["state"] for n, r in rows.items()} == {
        "storefront": "Pending",
        "checkout": "Conflict",
        "admin": "Skipped",
        "search": "Pending",
        "gateway": "Pending",
    }
    assert rows["checkout"]["reason"] == "ConflictingFields"
    assert rows["storefront"]["reason"] == "PendingNextRollout"
    assert rows["checkout"]["message"] == (
        'container "app" already has a preStop hook (exec); '
        "terminationGracePeriodSeconds is 20, below the budget of 65s"
    )
    assert rows["gateway"]["budgetSeconds"] == 170
    assert any("lost to GracefulPolicy shop/web-tier" in loss for loss in rows["storefront"]["lostPolicies"])


def test_check_of_rendered_output_is_compliant(tmp_path: Path) -> None:
    _, rendered = run("render", "-f", str(EXAMPLES / "policies"), "-f", str(EXAMPLES / "deployments"))
    namespaces = tmp_path / "namespaces.yaml"
    given = yaml.safe_load_all((EXAMPLES / "deployments" / "shop.yaml").read_text())
    namespaces.write_text(yaml.safe_dump_all([d for d in given if d["kind"] == "Namespace"]))
    code, out = run("check", "-f", str(EXAMPLES / "policies"), "-f", str(namespaces), "-f", "-", stdin=rendered)
    assert "shop/storefront: Compliant (InPlace)" in out
    assert "shop/search: Compliant (InPlace)" in out
    assert "payments/gateway: Compliant (InPlace)" in out
    assert code == EXIT_NOT_COMPLIANT, "checkout still conflicts"


def test_namespace_flag_applies_to_objects_without_one(tmp_path: Path) -> None:
    manifest = tmp_path / "d.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                {"apiVersion": "lameduck.dev/v1alpha1", "kind": "GracefulPolicy", "metadata": {"name": "p"}},
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "d"},
                    "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}},
                },
            ]
        )
    )
    code, out = run("check", "-n", "team-a", "-f", str(manifest))
    assert code == EXIT_NOT_COMPLIANT
    assert "team-a/d: Pending (PendingNextRollout) under GracefulPolicy team-a/p" in out


def test_list_documents_are_flattened(tmp_path: Path) -> None:
    manifest = tmp_path / "list.json"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "x"}}
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [deployment]}))
    code, out = run("check", "-f", str(manifest))
    assert code == EXIT_OK
    assert "x/d: Unmanaged (NoPolicy)" in out


def test_invalid_policy_is_reported_with_file_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("check", "-f", str(EXAMPLES / "invalid" / "unknown-mode.yaml"))
    assert code == EXIT_INVALID_OBJECTS
    err = capsys.readouterr().err
    assert "unknown-mode.yaml: GracefulPolicy unknown-mode: spec.mode: Unsupported value" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [("a: [", "not valid YAML"), ("- 1\n- 2\n", "every document must be a Kubernetes object")],
)
def test_unreadable_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    assert run("render", "-f", str(bad))[0] == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("check", "-f", "/nonexistent/policy.yaml")[0] == EXIT_BAD_INPUT
    assert "no such file or directory" in capsys.readouterr().err


def test_classic_sidecar_and_image_flags() -> None:
    code, out = run(
        "render",
        "--classic-sidecar",
        "--sidecar-image",
        "registry.example/lameduck/sidecar:9",
        "-f",
        str(EXAMPLES / "policies" / "web-tier.yaml"),
        "-f",
        str(EXAMPLES / "deployments"),
    )
    assert code == EXIT_OK
    storefront = next(d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"] == "storefront")
    names = [c["name"] for c in storefront["spec"]["template"]["spec"]["containers"]]
    assert names == ["app", "log-shipper", "lameduck"]
    assert storefront["spec"]["template"]["spec"]["containers"][2]["image"] == "registry.example/lameduck/sidecar:9"
