"""The install and the default path on a real cluster: lameduck installed with its Helm chart,
OnNextRollout served at admission, revert after admission, leader failover, helm upgrade.
"""

from __future__ import annotations

import json
import time
from typing import Any

from harness.install import OPERATOR_NAMESPACE, Operator, carries_lameduck, every_replica_injects
from harness.kube import Kube, wait_until
from harness.manifests import pause_deployment as workload
from lameduck_operator.logic.event_batches import QUIET_SECONDS
from lameduck_operator.names import FIELD_MANAGER, TAKEOVER_MANAGER
from tests.e2e.test_operator import events, policy, status, told

# The chart's default webhook timeout.
WEBHOOK_TIMEOUT_SECONDS = 3


def replica_sets(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    return kube.items("replicasets", ns, f"app={name}")


def listed_reason(kube: Kube, ns: str, policy_name: str, deployment: str) -> str | None:
    for entry in status(kube, ns, policy_name).get("nonCompliant") or []:
        if entry["name"] == deployment:
            return str(entry["reason"])
    return None


def writers_view(deployment: dict[str, Any]) -> dict[str, Any]:
    """What the writer wrote, as stored: the template, the annotations the writer set, and every
    managedFields entry but the status one's (the controller's), without times."""
    meta = deployment["metadata"]
    entries = sorted(
        (e["manager"], e["operation"], json.dumps(e.get("fieldsV1"), sort_keys=True))
        for e in meta.get("managedFields") or []
        if not e.get("subresource")
    )
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != "deployment.kubernetes.io/revision"}
    return {"template": deployment["spec"]["template"], "annotations": annotations, "managedFields": entries}


def revisioned(deployment: dict[str, Any]) -> dict[str, Any] | None:
    annotations = deployment["metadata"].get("annotations") or {}
    return deployment if "deployment.kubernetes.io/revision" in annotations else None


def restart(kube: Kube, ns: str, name: str) -> None:
    kube.run("rollout", "restart", f"deployment/{name}", "-n", ns)


def test_on_next_rollout_changes_no_replicaset_until_the_template_changes(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
    wait_until(lambda: len(replica_sets(kube, namespace, "web")) == 1, 30, "web has its ReplicaSet")
    kube.apply(policy("web", namespace, selector={"matchLabels": {"tier": "web"}}))
    wait_until(
        lambda: listed_reason(kube, namespace, "web", "web") == "PendingNextRollout",
        30,
        "the policy reports web PendingNextRollout",
    )
    assert len(replica_sets(kube, namespace, "web")) == 1, "the policy alone rolls nothing"
    assert not carries_lameduck(kube.get("deployment", "web", namespace))

    restart(kube, namespace, "web")
    wait_until(lambda: status(kube, namespace, "web").get("compliant") == 1, 30, "web is compliant after its rollout")
    sets = replica_sets(kube, namespace, "web")
    assert len(sets) == 2, "exactly one new ReplicaSet"
    newest = max(sets, key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))
    assert carries_lameduck(newest)
    assert newest["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


def test_a_deployment_created_under_the_policy_gets_the_hold_from_its_first_replicaset(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(policy("web", namespace, selector={"matchLabels": {"tier": "web"}}))
    every_replica_injects(kube, namespace, workload("web", {"tier": "web"}))
    created = kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
    assert "not applied" not in created.stderr
    sets = wait_until(lambda: replica_sets(kube, namespace, "web"), 30, "web has its ReplicaSet")
    assert len(sets) == 1
    assert carries_lameduck(sets[0])
    wait_until(lambda: status(kube, namespace, "web").get("compliant") == 1, 30, "web is reported compliant")
    # The status counts web compliant only once the reconciler has judged it, and the reconciler
    # writes before it records a judgement: had it injected, web would carry its write now. (The
    # policy's Event would follow only QUIET_SECONDS later, and its absence has no sign to wait for.)
    stored = kube.get("deployment", "web", namespace)
    managers = {e["manager"] for e in stored["metadata"]["managedFields"]}
    assert not managers & {FIELD_MANAGER, TAKEOVER_MANAGER}, "injected at admission, not by the reconciler"
    assert stored["metadata"]["generation"] == 1, "one template, the one admitted"


def test_a_conflict_is_admitted_unchanged_with_a_warning_to_the_writer(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(policy("web", namespace, selector={"matchLabels": {"tier": "web"}}))
    every_replica_injects(kube, namespace, workload("probe", {"tier": "web"}))
    hooked = workload("web", {"tier": "web"})
    hooked["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 3}}}
    created = kube.apply(hooked, namespace=namespace)
    assert "lameduck: GracefulPolicy" in created.stderr
    assert "already has a preStop hook" in created.stderr
    stored = kube.get("deployment", "web", namespace)
    spec = stored["spec"]["template"]["spec"]
    assert spec["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 3}}
    assert not carries_lameduck(stored)


def test_revert_after_admission_leaves_exactly_the_deployment_that_was_written(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
    # As written and as the deployment controller then marks it (its revision annotation, in a
    # managedFields entry of its own): the reverted Deployment is compared with both.
    written = writers_view(
        wait_until(lambda: revisioned(kube.get("deployment", "web", namespace)), 30, "web has its revision annotation")
    )
    kube.run("delete", "deployment", "web", "-n", namespace, "--wait=true")

    kube.apply(policy("web", namespace, selector={"matchLabels": {"tier": "web"}}))
    every_replica_injects(kube, namespace, workload("web", {"tier": "web"}))
    kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
    injected = kube.get("deployment", "web", namespace)
    assert carries_lameduck(injected)
    assert "lameduck.dev/admitted" in injected["metadata"]["annotations"]

    kube.run("delete", "gracefulpolicy", "web", "-n", namespace, "--wait=true", "--timeout=60s")

    def reverted_web() -> dict[str, Any] | None:
        d = kube.get("deployment", "web", namespace)
        return None if "lameduck.dev/policy" in (d["metadata"].get("annotations") or {}) else d

    # The revert is two writes: the values, then the writers' ownership of them; the second may
    # land a moment after the annotation is gone.
    wait_until(reverted_web, 30, "web is reverted")
    wait_until(
        lambda: writers_view(kube.get("deployment", "web", namespace)) == written,
        15,
        "web is exactly as it was written, its writers' ownership included",
    )


def test_with_the_operator_scaled_to_zero_writes_are_admitted_unchanged_and_reported_once_back(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(policy("web", namespace, selector={"matchLabels": {"tier": "web"}}))
    wait_until(lambda: status(kube, namespace, "web").get("conditions"), 30, "the operator has seen the policy")
    kube.run("scale", "deployment/lameduck-operator", "-n", OPERATOR_NAMESPACE, "--replicas=0")
    try:
        wait_until(lambda: not operator.pods(), 90, "no operator pod is left")
        started = time.monotonic()
        kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
        admitted_in = time.monotonic() - started
        assert admitted_in < WEBHOOK_TIMEOUT_SECONDS + 2, f"the write waited {admitted_in:.1f}s"
        assert not carries_lameduck(kube.get("deployment", "web", namespace))
    finally:
        kube.run("scale", "deployment/lameduck-operator", "-n", OPERATOR_NAMESPACE, "--replicas=2")
        kube.run("rollout", "status", "deployment/lameduck-operator", "-n", OPERATOR_NAMESPACE, "--timeout=120s")
    wait_until(
        lambda: listed_reason(kube, namespace, "web", "web") == "PendingNextRollout",
        60,
        "the operator, back, reports web PendingNextRollout",
    )


def test_a_killed_leader_is_replaced_within_15s_and_a_policy_applied_meanwhile_converges_once(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    names = ("a", "b", "c")
    kube.apply(*(workload(n, {"tier": "web"}) for n in names), namespace=namespace)
    leader = operator.leader()
    assert leader, "a replica leads"
    killed = time.monotonic()
    kube.run("delete", "pod", leader, "-n", OPERATOR_NAMESPACE, "--grace-period=0", "--force", "--wait=false")
    kube.apply(policy("web", namespace, apply="Immediate", selector={"matchLabels": {"tier": "web"}}))
    successor = wait_until(lambda: (p := operator.leader()) and p != leader and p, 30, "another replica leads")
    took_over = time.monotonic() - killed
    print(f"leader {leader} killed; {successor} leads after {took_over:.1f}s")
    assert took_over <= 15, f"the new leader took {took_over:.1f}s"
    wait_until(lambda: status(kube, namespace, "web").get("compliant") == 3, 60, "all three are compliant")
    # The burst's Event on the policy: the new leader tells what it injected in one Event (reporting
    # instance: its pod), QUIET_SECONDS after its last injection. It posts none when the killed
    # leader had injected all three; so the Events are final once the new leader's is there, or,
    # without one, that long after all three were compliant.
    final_by = time.monotonic() + QUIET_SECONDS + 1

    def final_listing() -> tuple[list[str]] | None:
        injected = events(kube, namespace, "Injected")
        if any(e.get("reportingInstance") == successor for e in injected) or time.monotonic() >= final_by:
            return (told(kube, namespace, "Injected", "web"),)
        return None

    (listed,) = wait_until(final_listing, QUIET_SECONDS + 30, "the policy's Injected Events are final")
    for name in names:
        deployment = kube.get("deployment", name, namespace)
        assert deployment["metadata"]["generation"] == 2, f"{name}: one template change, not two"
        # Once: one template change (above), and never listed twice in the policy's Events. The
        # force-deleted leader still leads until its Lease expires and may apply in that window,
        # then be killed before it posts its Event: so none is possible (CI saw it once), two is not.
        assert listed.count(name) <= 1, f"{name} was injected {listed.count(name)} times"


def test_helm_upgrade_with_changed_values_keeps_policies_working(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(workload("old", {"tier": "web"}), namespace=namespace)
    kube.apply(policy("web", namespace, apply="Immediate", selector={"matchLabels": {"tier": "web"}}))
    wait_until(lambda: status(kube, namespace, "web").get("compliant") == 1, 60, "old is compliant")
    try:
        operator.install("logLevel=DEBUG", "webhook.timeoutSeconds=5")
        webhook = json.loads(kube.run("get", "mutatingwebhookconfiguration", "lameduck", "-o", "json").stdout)
        assert webhook["webhooks"][0]["timeoutSeconds"] == 5
        every_replica_injects(kube, namespace, workload("new", {"tier": "web"}))
        kube.apply(workload("new", {"tier": "web"}), namespace=namespace)
        assert carries_lameduck(kube.get("deployment", "new", namespace))
        wait_until(lambda: status(kube, namespace, "web").get("compliant") == 2, 60, "both are compliant")
        assert len(replica_sets(kube, namespace, "old")) == 2, "the upgrade rolled no managed Deployment"
    finally:
        operator.install()
