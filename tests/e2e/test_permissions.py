"""What the operator's and the sidecar's service accounts may do, as the API server answers
`kubectl auth can-i --list`, equals the lists in docs/security.md, and neither reads Secrets.

Every authenticated service account may do a few things (discovery, its own access reviews):
those are what a service account with no bindings may do, asked the same way, and are left out
of both sides. The documented lists are the fenced `can-i` blocks of docs/security.md, so a grant
added to the chart or the sidecar's Role without the docs, or the other way round, fails here.
"""

from __future__ import annotations

import re

import pytest

from harness import REPO
from harness.install import OPERATOR_NAMESPACE, Operator
from harness.kube import Kube, wait_until
from harness.manifests import demo_app, guarded

pytestmark = pytest.mark.e2e

OPERATOR_ACCOUNT = f"{OPERATOR_NAMESPACE}:lameduck-operator"
DOCS = REPO / "docs" / "security.md"
Row = tuple[str, str, str, str]  # resource, non-resource URLs, resource names, verbs


def parse_can_i(text: str) -> set[Row]:
    """`kubectl auth can-i --list`'s table: columns found from the header's positions; each cell
    stripped, so a row is comparable whatever the widths."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    starts = [header.index(name) for name in ("Resources", "Non-Resource URLs", "Resource Names", "Verbs")]
    rows: set[Row] = set()
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], len(line) + 1], strict=True)]
        rows.add((cells[0], cells[1], cells[2], " ".join(sorted(cells[3].strip("[]").split()))))
    return rows


def documented(block: str) -> set[Row]:
    """The rows of docs/security.md's ```can-i <block>``` fence: `resource | urls | names | verbs`."""
    fence = re.search(rf"```can-i {re.escape(block)}\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert fence, f"docs/security.md has no ```can-i {block} block"
    rows: set[Row] = set()
    for line in fence.group(1).splitlines():
        if line.strip():
            resource, urls, names, verbs = (cell.strip() for cell in line.split("|"))
            rows.add((resource, urls, names, " ".join(sorted(verbs.split()))))
    return rows


def can_i(kube: Kube, account: str, namespace: str) -> set[Row]:
    done = kube.run("auth", "can-i", "--list", "-n", namespace, f"--as=system:serviceaccount:{account}")
    return parse_can_i(done.stdout)


def beyond_everyone(kube: Kube, account: str, namespace: str, nobody: str) -> set[Row]:
    return can_i(kube, account, namespace) - can_i(kube, nobody, namespace)


def show(rows: set[Row]) -> str:
    return "\n".join(" | ".join(row) for row in sorted(rows))


def reads_secrets(kube: Kube, account: str) -> list[str]:
    verbs = ["get", "list", "watch"]
    answers = {
        verb: kube.run(
            "auth", "can-i", verb, "secrets", "--all-namespaces", f"--as=system:serviceaccount:{account}", check=False
        ).stdout.strip()
        for verb in verbs
    }
    return [verb for verb, answer in answers.items() if answer != "no"]


def test_the_operator_and_the_sidecar_may_do_exactly_what_docs_security_lists(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.run("create", "serviceaccount", "nobody", "-n", namespace)
    nobody = f"{namespace}:nobody"
    kube.apply(guarded(namespace), namespace=namespace)
    kube.apply(*demo_app("demo", replicas=1), namespace=namespace)
    wait_until(
        lambda: bool(kube.items("rolebindings", namespace, "app.kubernetes.io/managed-by=lameduck")),
        120,
        "the sidecar's RoleBinding exists",
    )
    sidecar = f"{namespace}:default"

    operator_in_app_namespace = beyond_everyone(kube, OPERATOR_ACCOUNT, namespace, nobody)
    assert operator_in_app_namespace == documented("operator"), show(operator_in_app_namespace)
    operator_at_home = beyond_everyone(kube, OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, nobody)
    assert operator_at_home == documented("operator") | documented("operator-release-namespace"), show(operator_at_home)

    sidecar_at_home = beyond_everyone(kube, sidecar, namespace, nobody)
    assert sidecar_at_home == documented("sidecar"), show(sidecar_at_home)
    # outside its own namespace the sidecar's service account may do nothing more than any other
    assert beyond_everyone(kube, sidecar, OPERATOR_NAMESPACE, nobody) == set()
    assert beyond_everyone(kube, sidecar, "default", nobody) == set()

    assert reads_secrets(kube, OPERATOR_ACCOUNT) == []
    assert reads_secrets(kube, sidecar) == []


def test_can_i_tables_are_read_by_column_position() -> None:
    # kubectl aligns every row to the widest cell of each column (a tabwriter)
    table = (
        "Resources                         Non-Resource URLs   Resource Names       Verbs\n"
        "deployments.apps                  []                  []                   [patch list watch]\n"
        "roles.rbac.authorization.k8s.io   []                  [lameduck-sidecar]   [create delete]\n"
        "                                  [/api/*]            []                   [get]\n"
    )
    assert parse_can_i(table) == {
        ("deployments.apps", "[]", "[]", "list patch watch"),
        ("roles.rbac.authorization.k8s.io", "[]", "[lameduck-sidecar]", "create delete"),
        ("", "[/api/*]", "[]", "get"),
    }
